package lazypages

import (
	"sync"
	"testing"
	"time"
)

// memSource serves every pid's region from one buffer: the benchmarks
// measure the daemon and the kernel, not a page source.
type memSource struct {
	mu   sync.Mutex
	base map[int]uint64
	data []byte
}

func (s *memSource) ReadPages(pid int, addr uint64, dst []byte) error {
	s.mu.Lock()
	base := s.base[pid]
	s.mu.Unlock()
	copy(dst, s.data[addr-base:])
	return nil
}

func (s *memSource) Extents(pid int) ([]Extent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return []Extent{{Addr: s.base[pid], NrPages: uint64(len(s.data) / pageSize)}}, nil
}

func (s *memSource) Close() error { return nil }

func benchServe(b *testing.B, pages int, mode string, prefetch bool) {
	src := &memSource{base: map[int]uint64{}, data: make([]byte, pages*pageSize)}
	for i := range src.data {
		src.data[i] = byte(i*7 + 1)
	}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		v := startVictim(b, pages, mode)
		src.mu.Lock()
		src.base[v.pid] = v.addr
		src.mu.Unlock()
		dir, res := startDaemon(b, Options{Source: src, Prefetch: prefetch})
		c, err := Dial(dir)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Register(v.pid, v.u.Fd(), v.pidfd, []Range{{v.addr, v.size()}}); err != nil {
			b.Fatal(err)
		}
		v.closeFds()
		c.Done()
		c.Close()
		b.StartTimer()
		start := time.Now()
		v.send(b, "GO")
		r := waitServe(b, res)
		total += time.Since(start)
		b.StopTimer()
		if r.err != nil {
			b.Fatal(r.err)
		}
		if mode == "wait" {
			v.send(b, "READ")
		}
		v.wait(b, 10*time.Second)
		b.ReportMetric(float64(r.stats.FaultLatencyP50.Microseconds()), "p50-fault-µs")
		b.ReportMetric(float64(r.stats.FaultLatencyP99.Microseconds()), "p99-fault-µs")
	}
	b.ReportMetric(float64(total.Nanoseconds())/float64(b.N)/float64(pages)/1000, "µs/page")
	b.ReportMetric(float64(pages*pageSize)*float64(b.N)/total.Seconds()/1e6, "MB/s")
}

// BenchmarkFaults64MiB: a process reads 64 MiB once, every page by fault.
func BenchmarkFaults64MiB(b *testing.B) { benchServe(b, 16384, "read", false) }

// BenchmarkPrefetch256MiB: 256 MiB arrive by prefetch alone.
func BenchmarkPrefetch256MiB(b *testing.B) { benchServe(b, 65536, "wait", true) }

// BenchmarkFaultsWithPrefetch256MiB: a process reads 256 MiB sequentially
// while prefetch runs.
func BenchmarkFaultsWithPrefetch256MiB(b *testing.B) { benchServe(b, 65536, "read", true) }
