package lazypages

import (
	"math/bits"
	"slices"
)

// lazySet tracks the pages of one process that still have to be copied in
// from the page source. It is a sorted list of disjoint areas, each a
// bitmap over a run of pages; an area keeps the source address of its first
// page so that mremap can move it without losing where its data lives.
// Areas with nothing pending are dropped: a fault outside every area is
// answered with the zero page.
type lazySet struct {
	areas   []*area
	pending uint64
}

type area struct {
	start, end uint64 // current addresses, page aligned
	src        uint64 // source (dump-time) address of start
	bits       []uint64
	pending    uint64
}

func (a *area) npages() uint64 { return (a.end - a.start) / pageSize }

func (a *area) isPending(i uint64) bool { return a.bits[i/64]&(1<<(i%64)) != 0 }

// setRange marks pages [i, j) pending, a word at a time: registration
// builds sets of hundreds of thousands of pages and must stay cheap.
func (a *area) setRange(i, j uint64) {
	for i < j {
		w, b := i/64, i%64
		n := min(64-b, j-i)
		mask := ^uint64(0) >> (64 - n) << b
		a.pending += uint64(bits.OnesCount64(mask &^ a.bits[w]))
		a.bits[w] |= mask
		i += n
	}
}

// clearRange clears pages [i, j) and returns how many were pending.
func (a *area) clearRange(i, j uint64) uint64 {
	var n uint64
	for i < j {
		w := i / 64
		if i%64 == 0 && j-i >= 64 {
			n += uint64(bits.OnesCount64(a.bits[w]))
			a.bits[w] = 0
			i += 64
			continue
		}
		if a.bits[w]&(1<<(i%64)) != 0 {
			a.bits[w] &^= 1 << (i % 64)
			n++
		}
		i++
	}
	a.pending -= n
	return n
}

// nextPending returns the first pending page index >= i, or npages.
func (a *area) nextPending(i uint64) uint64 {
	n := a.npages()
	for i < n {
		w := a.bits[i/64] >> (i % 64)
		if w != 0 {
			i += uint64(bits.TrailingZeros64(w))
			return min(i, n)
		}
		i = (i/64 + 1) * 64
	}
	return n
}

// slice returns pages [i, j) as a new area, or nil when none is pending.
func (a *area) slice(i, j uint64) *area {
	b := newArea(a.start+i*pageSize, a.start+j*pageSize, a.src+i*pageSize)
	for k := i; k < j; k++ {
		if a.isPending(k) {
			b.bits[(k-i)/64] |= 1 << ((k - i) % 64)
			b.pending++
		}
	}
	if b.pending == 0 {
		return nil
	}
	return b
}

func newArea(start, end, src uint64) *area {
	n := (end - start) / pageSize
	return &area{start: start, end: end, src: src, bits: make([]uint64, (n+63)/64)}
}

// newLazySet builds the pending set of a process: the dumped pages
// (extents) that fall into its registered lazy ranges. Pages dumped outside
// the ranges were restored eagerly and are none of the daemon's business.
func newLazySet(ranges []Range, extents []Extent) *lazySet {
	ex := slices.Clone(extents)
	slices.SortFunc(ex, func(a, b Extent) int { return cmpU64(a.Addr, b.Addr) })
	rs := slices.Clone(ranges)
	slices.SortFunc(rs, func(a, b Range) int { return cmpU64(a.Start, b.Start) })
	s := &lazySet{}
	for _, r := range rs {
		rEnd := r.Start + r.Len
		// First extent that may reach into r.
		i, _ := slices.BinarySearchFunc(ex, r.Start, func(e Extent, addr uint64) int {
			if e.End() <= addr {
				return -1
			}
			return 1
		})
		for ; i < len(ex) && ex[i].Addr < rEnd; i++ {
			lo, hi := max(ex[i].Addr, r.Start), min(ex[i].End(), rEnd)
			if lo >= hi {
				continue
			}
			// Overlapping extents (a sloppy source) merge into the
			// previous area instead of producing overlapping areas.
			if n := len(s.areas); n > 0 && s.areas[n-1].end > lo {
				last := s.areas[n-1]
				if hi <= last.end {
					continue
				}
				lo = last.end
			}
			a := newArea(lo, hi, lo)
			a.setRange(0, a.npages())
			s.areas = append(s.areas, a)
			s.pending += a.pending
		}
	}
	return s
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// find returns the index of the area containing addr, or -1.
func (s *lazySet) find(addr uint64) int {
	i, _ := slices.BinarySearchFunc(s.areas, addr, func(a *area, addr uint64) int {
		if a.end <= addr {
			return -1
		}
		return 1
	})
	if i < len(s.areas) && s.areas[i].start <= addr {
		return i
	}
	return -1
}

// run is a stretch of pending pages, contiguous both in the address space
// and in the source.
type run struct {
	addr, src uint64
	npages    uint64
}

func (r run) bytes() uint64 { return r.npages * pageSize }

func (r run) end() uint64 { return r.addr + r.bytes() }

func (r run) contains(addr uint64) bool { return addr >= r.addr && addr < r.end() }

// faultRun returns the pending run around the page at addr, limited to the
// naturally aligned window of window pages that contains it, or ok=false if
// the page is not pending.
func (s *lazySet) faultRun(addr uint64, window uint64) (run, bool) {
	addr &^= pageSize - 1
	ai := s.find(addr)
	if ai < 0 {
		return run{}, false
	}
	a := s.areas[ai]
	p := (addr - a.start) / pageSize
	if !a.isPending(p) {
		return run{}, false
	}
	wbytes := window * pageSize
	wStart := max(addr&^(wbytes-1), a.start)
	wEnd := min(addr&^(wbytes-1)+wbytes, a.end)
	lo, hi := p, p+1
	for lo > (wStart-a.start)/pageSize && a.isPending(lo-1) {
		lo--
	}
	for hi < (wEnd-a.start)/pageSize && a.isPending(hi) {
		hi++
	}
	return run{addr: a.start + lo*pageSize, src: a.src + lo*pageSize, npages: hi - lo}, true
}

// nextRun returns the first pending run at or after cursor (wrapping
// around to the lowest address), at most maxPages long, that overlaps none
// of the busy runs (being copied elsewhere).
func (s *lazySet) nextRun(cursor uint64, maxPages uint64, busy []run) (run, bool) {
	// Every busy run skipped moves the cursor past it; each can be met
	// once before and once after the wrap.
	for tries := 0; tries <= 2*len(busy)+1; tries++ {
		r, ok := s.nextRunFrom(cursor, maxPages)
		if !ok {
			return run{}, false
		}
		r, skipTo := trimBusyUp(r, busy)
		if r.npages > 0 {
			return r, true
		}
		cursor = skipTo
	}
	return run{}, false
}

func (s *lazySet) nextRunFrom(cursor uint64, maxPages uint64) (run, bool) {
	if s.pending == 0 {
		return run{}, false
	}
	start, _ := slices.BinarySearchFunc(s.areas, cursor, func(a *area, addr uint64) int {
		if a.end <= addr {
			return -1
		}
		return 1
	})
	for k := 0; k <= len(s.areas); k++ {
		ai := (start + k) % len(s.areas)
		a := s.areas[ai]
		from := uint64(0)
		if k == 0 && cursor > a.start && cursor < a.end {
			from = (cursor - a.start) / pageSize
		}
		i := a.nextPending(from)
		if i >= a.npages() {
			continue
		}
		j := i + 1
		for j < a.npages() && j-i < maxPages && a.isPending(j) {
			j++
		}
		return run{addr: a.start + i*pageSize, src: a.src + i*pageSize, npages: j - i}, true
	}
	return run{}, false
}

// trimBusyUp cuts r before the first busy run inside it. When r starts in
// a busy run nothing is left, and skipTo is where to search on.
func trimBusyUp(r run, busy []run) (run, uint64) {
	for _, b := range busy {
		if b.addr >= r.end() || b.end() <= r.addr {
			continue
		}
		if b.addr <= r.addr {
			return run{}, b.end()
		}
		r.npages = (b.addr - r.addr) / pageSize
	}
	return r, 0
}

// pendingParts appends to out the runs of r's pages that are pending and
// overlap no busy run, in address order.
func (s *lazySet) pendingParts(r run, busy []run, out []run) []run {
	for a := r.addr; a < r.end(); {
		next, ok := s.nextRunFrom(a, (r.end()-a)/pageSize)
		if !ok || next.addr < a || next.addr >= r.end() {
			break // nothing more in r (the search wrapped, or went past)
		}
		next.npages = min(next.npages, (r.end()-next.addr)/pageSize)
		a = next.end()
		for next.npages > 0 {
			part, skipTo := trimBusyUp(next, busy)
			if part.npages == 0 {
				// next starts in a busy run: go on after it.
				if skipTo >= next.end() {
					break
				}
				cut := (skipTo - next.addr) / pageSize
				next = run{addr: skipTo, src: next.src + cut*pageSize, npages: next.npages - cut}
				continue
			}
			out = append(out, part)
			next = run{addr: part.end(), src: part.src + part.bytes(), npages: next.npages - part.npages}
		}
	}
	return out
}

// prevRun is nextRun downwards: the pending run that ends at the highest
// pending page below cursor (wrapping around to the highest address), at
// most maxPages long, overlapping no busy run.
func (s *lazySet) prevRun(cursor uint64, maxPages uint64, busy []run) (run, bool) {
	for tries := 0; tries <= 2*len(busy)+1; tries++ {
		r, ok := s.prevRunFrom(cursor, maxPages)
		if !ok {
			return run{}, false
		}
		r, skipTo := trimBusyDown(r, busy)
		if r.npages > 0 {
			return r, true
		}
		cursor = skipTo
	}
	return run{}, false
}

func (s *lazySet) prevRunFrom(cursor uint64, maxPages uint64) (run, bool) {
	if s.pending == 0 {
		return run{}, false
	}
	// The last area starting below cursor.
	i, _ := slices.BinarySearchFunc(s.areas, cursor, func(a *area, addr uint64) int {
		if a.start < addr {
			return -1
		}
		return 1
	})
	n := len(s.areas)
	for k := 0; k <= n; k++ {
		ai := ((i-1-k)%n + n) % n
		a := s.areas[ai]
		top := a.npages() // pages below index top are candidates
		if k == 0 && cursor > a.start && cursor < a.end {
			top = (cursor - a.start) / pageSize
		}
		j := a.prevPending(top)
		if j < 0 {
			continue
		}
		lo := uint64(j)
		for lo > 0 && uint64(j)+1-lo < maxPages && a.isPending(lo-1) {
			lo--
		}
		return run{addr: a.start + lo*pageSize, src: a.src + lo*pageSize, npages: uint64(j) + 1 - lo}, true
	}
	return run{}, false
}

// trimBusyDown cuts r above the last busy run inside it; when r ends in a
// busy run nothing is left and skipTo is where to search on (downwards).
func trimBusyDown(r run, busy []run) (run, uint64) {
	for _, b := range busy {
		if b.addr >= r.end() || b.end() <= r.addr {
			continue
		}
		if b.end() >= r.end() {
			return run{}, b.addr
		}
		cut := (b.end() - r.addr) / pageSize
		r.addr, r.src, r.npages = b.end(), r.src+cut*pageSize, r.npages-cut
	}
	return r, 0
}

// prevPending returns the last pending page index below top, or -1.
func (a *area) prevPending(top uint64) int64 {
	for top > 0 {
		i := top - 1
		w := a.bits[i/64] << (63 - i%64) // page i at bit 63
		if w != 0 {
			return int64(i) - int64(bits.LeadingZeros64(w))
		}
		top = i - i%64
	}
	return -1
}

// pendingAt reports whether the page at addr is pending and still backed
// by source address src (an mremap may have moved other pages there).
func (s *lazySet) pendingAt(addr, src uint64) bool {
	ai := s.find(addr)
	if ai < 0 {
		return false
	}
	a := s.areas[ai]
	i := (addr - a.start) / pageSize
	return a.isPending(i) && a.src+i*pageSize == src
}

// clear marks [start, end) as no longer pending (copied, or dropped by
// MADV_DONTNEED / munmap) and returns how many pages were pending there.
func (s *lazySet) clear(start, end uint64) uint64 {
	start &^= pageSize - 1
	var n uint64
	for i := 0; i < len(s.areas); i++ {
		a := s.areas[i]
		if a.end <= start || a.start >= end {
			continue
		}
		lo, hi := max(a.start, start), min(a.end, end)
		n += a.clearRange((lo-a.start)/pageSize, (hi-a.start+pageSize-1)/pageSize)
	}
	s.pending -= n
	s.compact()
	return n
}

// compact drops areas with nothing pending.
func (s *lazySet) compact() {
	s.areas = slices.DeleteFunc(s.areas, func(a *area) bool { return a.pending == 0 })
}

// remap follows mremap: what was pending in [from, from+length) is now
// pending at to, still backed by the same source pages. The kernel reports
// an UNMAP of the target range (MREMAP_FIXED over a mapping) right before
// the REMAP and an UNMAP of the old range right after it; cutting the
// target here as well keeps the set consistent whatever arrives.
func (s *lazySet) remap(from, to, length uint64) {
	moved := s.cut(from, from+length)
	for _, b := range moved {
		// Unsigned arithmetic wraps correctly in both directions.
		b.start = b.start - from + to
		b.end = b.end - from + to
	}
	s.cut(to, to+length)
	s.areas = append(s.areas, moved...)
	slices.SortFunc(s.areas, func(a, b *area) int { return cmpU64(a.start, b.start) })
	s.recount()
}

// cut takes [lo, hi) out of the set, splitting areas at the bounds, and
// returns the pieces taken that had pending pages.
func (s *lazySet) cut(lo, hi uint64) []*area {
	var kept, removed []*area
	for _, a := range s.areas {
		if a.end <= lo || a.start >= hi {
			kept = append(kept, a)
			continue
		}
		i := (max(a.start, lo) - a.start) / pageSize
		j := (min(a.end, hi) - a.start) / pageSize
		if i > 0 {
			if b := a.slice(0, i); b != nil {
				kept = append(kept, b)
			}
		}
		if b := a.slice(i, j); b != nil {
			removed = append(removed, b)
		}
		if j < a.npages() {
			if b := a.slice(j, a.npages()); b != nil {
				kept = append(kept, b)
			}
		}
	}
	s.areas = kept
	s.recount()
	return removed
}

func (s *lazySet) recount() {
	s.pending = 0
	for _, a := range s.areas {
		s.pending += a.pending
	}
}

// clone deep-copies the set (for a forked child).
func (s *lazySet) clone() *lazySet {
	c := &lazySet{pending: s.pending, areas: make([]*area, len(s.areas))}
	for i, a := range s.areas {
		b := *a
		b.bits = slices.Clone(a.bits)
		c.areas[i] = &b
	}
	return c
}

// firstPending returns the address of some pending page (for liveness
// probes), or 0.
func (s *lazySet) firstPending() uint64 {
	if len(s.areas) == 0 {
		return 0
	}
	return s.areas[0].start
}
