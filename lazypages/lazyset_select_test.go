package lazypages

import (
	"math/rand"
	"slices"
	"testing"
)

func TestAreaSetRange(t *testing.T) {
	a := newArea(0, 200*pageSize, 0)
	a.setRange(3, 70)
	a.setRange(60, 64) // already set: not counted twice
	a.setRange(130, 200)
	if a.pending != 67+70 {
		t.Fatalf("pending %d", a.pending)
	}
	for i := uint64(0); i < 200; i++ {
		want := (i >= 3 && i < 70) || i >= 130
		if a.isPending(i) != want {
			t.Fatalf("page %d pending %v", i, a.isPending(i))
		}
	}
	if got := a.prevPending(200); got != 199 {
		t.Errorf("prevPending(200) = %d", got)
	}
	if got := a.prevPending(130); got != 69 {
		t.Errorf("prevPending(130) = %d", got)
	}
	if got := a.prevPending(3); got != -1 {
		t.Errorf("prevPending(3) = %d", got)
	}
}

// pendingIn lists the model's pending pages in [lo, hi), sorted.
func (m model) pendingIn(lo, hi uint64) []uint64 {
	var out []uint64
	for a := range m {
		if a >= lo && a < hi {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

func inBusy(busy []run, a uint64) bool {
	for _, b := range busy {
		if b.contains(a) {
			return true
		}
	}
	return false
}

// checkRun verifies that r holds only pages the model has pending, with
// the right sources, none of them busy.
func checkRun(t *testing.T, m model, busy []run, r run, what string) {
	t.Helper()
	if r.npages == 0 {
		t.Fatalf("%s: empty run", what)
	}
	for a := r.addr; a < r.end(); a += pageSize {
		src, ok := m[a]
		if !ok || src != r.src+(a-r.addr) {
			t.Fatalf("%s: %+v: page %#x not pending with its source", what, r, a)
		}
		if inBusy(busy, a) {
			t.Fatalf("%s: %+v: page %#x is busy", what, r, a)
		}
	}
}

// Prefetch selection (nextRun, prevRun, pendingParts, pendingAt) against
// the map model, with busy runs in the way.
func TestLazySetSelectRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	const base, npages = 0x100000, 700
	end := uint64(base + npages*pageSize)
	page := func() uint64 { return base + uint64(rng.Intn(npages))*pageSize }
	for iter := 0; iter < 200; iter++ {
		var extents []Extent
		for a := uint64(base); a < end; {
			n := uint64(1 + rng.Intn(90))
			if rng.Intn(4) > 0 {
				extents = append(extents, Extent{Addr: a, NrPages: min(n, (end-a)/pageSize)})
			}
			a += (n + uint64(rng.Intn(6))) * pageSize
		}
		s := newLazySet([]Range{{base, npages * pageSize}}, extents)
		m := model{}
		for _, e := range extents {
			for a := e.Addr; a < e.End(); a += pageSize {
				m[a] = a
			}
		}
		// Drop some pages so areas have holes.
		for k := 0; k < 20; k++ {
			lo := page()
			hi := lo + uint64(rng.Intn(8))*pageSize
			for a := lo; a < hi; a += pageSize {
				delete(m, a)
			}
			s.clear(lo, hi)
		}
		m.check(t, s, "setup")
		var busy []run
		for k := rng.Intn(4); k > 0; k-- {
			if r, ok := s.nextRun(page(), uint64(1+rng.Intn(40)), busy); ok {
				busy = append(busy, r)
			}
		}
		for _, b := range busy {
			checkRun(t, m, nil, b, "busy")
		}
		free := 0
		for a := range m {
			if !inBusy(busy, a) {
				free++
			}
		}

		// nextRun: the first free pending page at or after the cursor
		// (wrapping), extended upwards.
		cur := page()
		r, ok := s.nextRun(cur, 16, busy)
		if ok != (free > 0) {
			t.Fatalf("nextRun ok=%v with %d free pages", ok, free)
		}
		if ok {
			checkRun(t, m, busy, r, "nextRun")
			want := uint64(0)
			for _, a := range append(m.pendingIn(cur, end), m.pendingIn(base, cur)...) {
				if !inBusy(busy, a) {
					want = a
					break
				}
			}
			if r.addr != want || r.npages > 16 {
				t.Fatalf("nextRun(%#x) = %+v, first free page %#x", cur, r, want)
			}
		}

		// prevRun: the last free pending page below the cursor
		// (wrapping), extended downwards.
		r, ok = s.prevRun(cur, 16, busy)
		if ok != (free > 0) {
			t.Fatalf("prevRun ok=%v with %d free pages", ok, free)
		}
		if ok {
			checkRun(t, m, busy, r, "prevRun")
			below := append(m.pendingIn(cur, end), m.pendingIn(base, cur)...) // wrap order, reversed below
			want := uint64(0)
			for i := len(below) - 1; i >= 0; i-- {
				if !inBusy(busy, below[i]) {
					want = below[i]
					break
				}
			}
			if r.end()-pageSize != want || r.npages > 16 {
				t.Fatalf("prevRun(%#x) = %+v, last free page below %#x", cur, r, want)
			}
		}

		// pendingParts: exactly the free pending pages of a span, as
		// runs in order.
		lo := page()
		span := run{addr: lo, npages: uint64(1 + rng.Intn(200))}
		span.npages = min(span.npages, (end-lo)/pageSize)
		parts := s.pendingParts(span, busy, nil)
		var got []uint64
		for i, p := range parts {
			checkRun(t, m, busy, p, "pendingParts")
			if i > 0 && p.addr < parts[i-1].end() {
				t.Fatalf("pendingParts out of order: %+v", parts)
			}
			for a := p.addr; a < p.end(); a += pageSize {
				got = append(got, a)
			}
		}
		var want []uint64
		for _, a := range m.pendingIn(span.addr, span.end()) {
			if !inBusy(busy, a) {
				want = append(want, a)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("pendingParts(%+v) covers %d pages, want %d", span, len(got), len(want))
		}

		// pendingAt checks the source too.
		a := page()
		src, pend := m[a]
		if s.pendingAt(a, a) != (pend && src == a) || (pend && s.pendingAt(a, a+pageSize)) {
			t.Fatalf("pendingAt(%#x) wrong", a)
		}
	}
}

// A remap moves pages to addresses where their source differs: pendingAt
// tells them apart, so a read of the old source is not copied there.
func TestPendingAtAfterRemap(t *testing.T) {
	s := newLazySet([]Range{{0x100000, 0x100000}}, []Extent{{Addr: 0x100000, NrPages: 256}})
	s.remap(0x100000, 0x180000, 16*pageSize)
	if s.pendingAt(0x100000, 0x100000) {
		t.Error("old place still pending")
	}
	if !s.pendingAt(0x180000, 0x100000) {
		t.Error("moved page not pending with its source")
	}
	if s.pendingAt(0x180000, 0x180000) {
		t.Error("moved page pending with the source of the page it replaced")
	}
}
