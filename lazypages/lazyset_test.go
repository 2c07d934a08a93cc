package lazypages

import (
	"math/rand"
	"testing"
)

// model is the obvious map-based version of a lazySet: current page
// address -> source address of each pending page.
type model map[uint64]uint64

func (m model) check(t *testing.T, s *lazySet, what string) {
	t.Helper()
	var n uint64
	for _, a := range s.areas {
		if a.pending == 0 {
			t.Fatalf("%s: empty area [%#x,%#x) kept", what, a.start, a.end)
		}
		var cnt uint64
		for i := uint64(0); i < a.npages(); i++ {
			if !a.isPending(i) {
				continue
			}
			cnt++
			addr := a.start + i*pageSize
			src, ok := m[addr]
			if !ok || src != a.src+i*pageSize {
				t.Fatalf("%s: page %#x pending with source %#x, model says %#x (%v)", what, addr, a.src+i*pageSize, src, ok)
			}
		}
		if cnt != a.pending {
			t.Fatalf("%s: area count %d, bits say %d", what, a.pending, cnt)
		}
		n += cnt
	}
	if n != s.pending || n != uint64(len(m)) {
		t.Fatalf("%s: set says %d pending, areas %d, model %d", what, s.pending, n, len(m))
	}
	for i := 1; i < len(s.areas); i++ {
		if s.areas[i-1].end > s.areas[i].start {
			t.Fatalf("%s: areas overlap or are unsorted", what)
		}
	}
}

func TestLazySetBuild(t *testing.T) {
	ranges := []Range{{0x10000, 0x10000}, {0x40000, 0x4000}}
	extents := []Extent{
		{Addr: 0x8000, NrPages: 10},  // straddles the start of range 0
		{Addr: 0x18000, NrPages: 20}, // straddles its end
		{Addr: 0x30000, NrPages: 4},  // in no range
		{Addr: 0x41000, NrPages: 1},
	}
	s := newLazySet(ranges, extents)
	m := model{}
	for a := uint64(0x10000); a < 0x12000; a += pageSize {
		m[a] = a
	}
	for a := uint64(0x18000); a < 0x20000; a += pageSize {
		m[a] = a
	}
	m[0x41000] = 0x41000
	m.check(t, s, "build")

	r, ok := s.faultRun(0x1a123, 16)
	if !ok || r.addr != 0x18000 || r.npages != 8 || r.src != 0x18000 {
		t.Errorf("faultRun = %+v, %v", r, ok)
	}
	if _, ok := s.faultRun(0x14000, 16); ok {
		t.Error("faultRun on a page that is not pending")
	}
	r, ok = s.nextRun(0x30000, 4, nil)
	if !ok || r.addr != 0x41000 || r.npages != 1 {
		t.Errorf("nextRun = %+v, %v", r, ok)
	}
	r, ok = s.nextRun(0x50000, 100, nil) // wraps around
	if !ok || r.addr != 0x10000 || r.npages != 2 {
		t.Errorf("nextRun after the end = %+v, %v", r, ok)
	}
}

// TestLazySetRandom drives a set and the model with random operations
// (copies, madvise/munmap, mremap, fork) and compares them after each.
func TestLazySetRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	const base, npages = 0x100000, 512
	page := func() uint64 { return base + uint64(rng.Intn(npages))*pageSize }
	for iter := 0; iter < 50; iter++ {
		var extents []Extent
		for a := uint64(base); a < base+npages*pageSize; {
			n := uint64(1 + rng.Intn(40))
			if rng.Intn(3) > 0 {
				extents = append(extents, Extent{Addr: a, NrPages: n})
			}
			a += (n + uint64(rng.Intn(5))) * pageSize
		}
		ranges := []Range{{base, npages * pageSize / 2}, {base + npages*pageSize/2 + 8*pageSize, npages*pageSize/2 - 8*pageSize}}
		s := newLazySet(ranges, extents)
		m := model{}
		for _, e := range extents {
			for a := e.Addr; a < e.End(); a += pageSize {
				for _, r := range ranges {
					if a >= r.Start && a < r.Start+r.Len {
						m[a] = a
					}
				}
			}
		}
		m.check(t, s, "build")
		for op := 0; op < 60; op++ {
			switch rng.Intn(5) {
			case 0: // a fault copies its run
				a := page()
				r, ok := s.faultRun(a, 16)
				if _, pend := m[a&^(pageSize-1)]; ok != pend {
					t.Fatalf("faultRun(%#x) ok=%v, model pending=%v", a, ok, pend)
				}
				if ok {
					if r.addr > a || r.addr+r.bytes() <= a || r.npages > 16 {
						t.Fatalf("faultRun(%#x) = %+v", a, r)
					}
					for p := r.addr; p < r.addr+r.bytes(); p += pageSize {
						if m[p] != r.src+(p-r.addr) {
							t.Fatalf("run page %#x not pending with the right source", p)
						}
						delete(m, p)
					}
					s.clear(r.addr, r.addr+r.bytes())
				}
			case 1: // prefetch
				if r, ok := s.nextRun(page(), 8, nil); ok {
					for p := r.addr; p < r.addr+r.bytes(); p += pageSize {
						if m[p] != r.src+(p-r.addr) {
							t.Fatalf("prefetch run page %#x wrong", p)
						}
						delete(m, p)
					}
					s.clear(r.addr, r.addr+r.bytes())
				} else if len(m) != 0 {
					t.Fatal("nextRun found nothing but pages are pending")
				}
			case 2: // MADV_DONTNEED / munmap
				lo := page()
				hi := lo + uint64(rng.Intn(30))*pageSize
				want := 0
				for p := lo; p < hi; p += pageSize {
					if _, ok := m[p]; ok {
						want++
						delete(m, p)
					}
				}
				if got := s.clear(lo, hi); got != uint64(want) {
					t.Fatalf("clear dropped %d, model %d", got, want)
				}
			case 3: // mremap somewhere else, possibly overlapping
				from := page()
				length := uint64(1+rng.Intn(64)) * pageSize
				to := uint64(0x4000000) + uint64(rng.Intn(64))*pageSize
				if rng.Intn(2) == 0 {
					to = page()
				}
				moved := model{}
				for p := from; p < from+length; p += pageSize {
					if src, ok := m[p]; ok {
						moved[p-from+to] = src
						delete(m, p)
					}
				}
				for p := to; p < to+length; p += pageSize {
					delete(m, p)
				}
				for k, v := range moved {
					m[k] = v
				}
				s.remap(from, to, length)
			case 4: // fork: the clone must be equal and independent
				c := s.clone()
				m.check(t, c, "clone")
				c.clear(0, ^uint64(0))
				if c.pending != 0 || len(c.areas) != 0 {
					t.Fatal("clone not cleared")
				}
			}
			m.check(t, s, "after op")
		}
	}
}
