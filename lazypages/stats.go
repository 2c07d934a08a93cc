package lazypages

import (
	"math/bits"
	"time"
)

// Stats describe one Serve run. Durations marshal as nanoseconds.
type Stats struct {
	Processes     int `json:"processes"`      // registered through the socket
	Forks         int `json:"forks"`          // children that forked off them (FORK events)
	ProcessesGone int `json:"processes_gone"` // exited (or exec'd) before all their pages were in

	Faults          uint64 `json:"faults"`            // page-fault messages served
	PagesByFault    uint64 `json:"pages_by_fault"`    // pages copied to resolve faults (with their neighbourhood)
	PagesByPrefetch uint64 `json:"pages_by_prefetch"` // pages copied by background prefetch
	ZeroPages       uint64 `json:"zero_pages"`        // faults answered with the zero page (not in the image, or dropped)
	PagesExisting   uint64 `json:"pages_existing"`    // copies that found the page already present (EEXIST)
	PagesDropped    uint64 `json:"pages_dropped"`     // pending pages discarded by MADV_DONTNEED/munmap before they were copied
	BytesCopied     uint64 `json:"bytes_copied"`      // UFFDIO_COPY payload
	Remaps          uint64 `json:"remaps"`
	Removes         uint64 `json:"removes"`
	Unmaps          uint64 `json:"unmaps"`

	// Fault latency: from reading the fault message to the faulting page
	// being in (its copy done, the thread woken). The rest of the run
	// around it is copied afterwards and does not count. The percentiles come from a log-linear histogram and
	// are exact to within 1/16.
	FaultLatencyP50 time.Duration `json:"fault_latency_p50_ns"`
	FaultLatencyP99 time.Duration `json:"fault_latency_p99_ns"`
	FaultLatencyMax time.Duration `json:"fault_latency_max_ns"`
	// ReadWait is how long the loop waited for prefetch workers' copies
	// of a process to end before it could read that process's uffd (see
	// prefetch.go): time a fault may spend before its message is read,
	// which the fault latency does not include. Waits under 1 µs (no
	// copy in flight) are not counted.
	ReadWaitP99 time.Duration `json:"read_wait_p99_ns"`
	ReadWaitMax time.Duration `json:"read_wait_max_ns"`
	// AllPagesIn is the time from the first registration until the last
	// pending page was in (0 if that never happened).
	AllPagesIn time.Duration `json:"all_pages_in_ns"`
}

// latencyHist is a log-linear histogram of nanosecond values: 16 buckets
// per power of two, so any recorded value is known to within 1/16.
type latencyHist struct {
	counts [64 * 16]uint64
	n      uint64
	max    uint64
}

const subBits = 4

func histIndex(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - 1
	sub := (v >> (e - subBits)) & (1<<subBits - 1)
	return (e-subBits+1)<<subBits + int(sub)
}

// histUpper is the largest value that lands in bucket i.
func histUpper(i int) uint64 {
	if i < 1<<subBits {
		return uint64(i)
	}
	e := i>>subBits + subBits - 1
	sub := uint64(i & (1<<subBits - 1))
	lower := (1<<subBits + sub) << (e - subBits)
	return lower + 1<<(e-subBits) - 1
}

func (h *latencyHist) add(d time.Duration) {
	v := uint64(max(d, 0))
	h.counts[histIndex(v)]++
	h.n++
	h.max = max(h.max, v)
}

// quantile returns the upper bound of the bucket holding the q-th value,
// capped at the maximum seen.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(q*float64(h.n) + 0.999999)
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(histUpper(i), h.max))
		}
	}
	return time.Duration(h.max)
}
