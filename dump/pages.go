package dump

import (
	"fmt"
	"os"
	"time"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// chunkSize bounds one process_vm_readv + write round.
const chunkSize = 4 << 20

// run is a stretch of contiguous pages to dump, with its pagemap flags.
type run struct {
	addr  uint64
	pages uint64
	flags uint32
	// whole: a lazy area recorded whole, whose pages with data are found after the freeze (lazy_scan.go).
	whole bool
}

// scanPages finds the pages to dump in every private area (pagescan.go). With deferLazy (a lazy dump)
// lazy areas are not scanned here, in the freeze window, where the page-table walk would make the
// downtime grow with memory: each becomes one run over the whole area, which the LazySource narrows to
// the pages that hold data after the window, unless smaps showed the area wholly resident (lazy_scan.go).
func scanPages(pid int, areas []*area, st *Stats, deferLazy bool) ([]run, error) {
	sc, err := newPageScanner(pid)
	if err != nil {
		return nil, err
	}
	defer sc.close()
	var runs []run
	for _, a := range areas {
		if !a.dumpPages {
			continue
		}
		n := (a.m.End - a.m.Start) / images.PageSize
		st.PagesScanned += n
		flags := images.PEPresent
		if a.lazy {
			flags |= images.PELazy
		}
		if deferLazy && a.lazy {
			runs = append(runs, run{addr: a.m.Start, pages: n, flags: flags, whole: !whollyResident(a.m)})
			continue
		}
		var found uint64
		if runs, found, err = sc.scanArea(a.m.Start, a.m.End, flags, runs); err != nil {
			return nil, err
		}
		st.PagesSkipped += n - found
	}
	return runs, nil
}

// writePages copies the runs out of the task into pagemap-PID.img / pages-1.img.
// Areas without read permission are read through /proc/PID/mem, which may read them (FOLL_FORCE).
// lazy is nil except in a lazy dump (lazy_source.go): lazy runs then get pagemap entries without data.
func writePages(dir *images.Dir, pid, vpid int, pagesID uint32, areas []*area, runs []run, st *Stats, progress func(done, total uint64), lazy *lazyProc) error {
	w, err := dir.CreatePagemap(vpid, pagesID)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	unreadable := func(addr uint64) bool {
		for _, a := range areas {
			if addr >= a.m.Start && addr < a.m.End {
				return !a.m.Read
			}
		}
		return false
	}
	var mem *os.File
	defer func() {
		if mem != nil {
			mem.Close()
		}
	}()
	var total uint64
	for _, r := range runs {
		total += r.pages * images.PageSize
	}
	buf := make([]byte, chunkSize)
	var done uint64
	var readTime, writeTime time.Duration
	lastProgress := time.Now()
	// Gather up to chunkSize bytes of consecutive runs into one process_vm_readv.
	for i := 0; i < len(runs); {
		// Lazy dump hook (lazy_source.go): a lazy run's data stays in the frozen task and is served from there.
		if lazy.leaves(runs[i]) {
			if err := lazy.leave(w, runs[i], unreadable(runs[i].addr), st); err != nil {
				return err
			}
			i++
			continue
		}
		var segs []sys.Segment
		var parts []run
		size := 0
		for i < len(runs) && size < chunkSize && !lazy.leaves(runs[i]) {
			r := runs[i]
			n := int(r.pages * images.PageSize)
			if n > chunkSize-size {
				// Split a long run.
				fit := (chunkSize - size) / images.PageSize
				if fit == 0 {
					break
				}
				head := run{addr: r.addr, pages: uint64(fit), flags: r.flags}
				runs[i] = run{addr: r.addr + uint64(fit)*images.PageSize, pages: r.pages - uint64(fit), flags: r.flags}
				r, n = head, fit*images.PageSize
			} else {
				i++
			}
			segs = append(segs, sys.Segment{Addr: r.addr, Len: n})
			parts = append(parts, r)
			size += n
		}
		t0 := time.Now()
		if err := readSegments(pid, segs, buf[:size], unreadable, &mem); err != nil {
			return err
		}
		t1 := time.Now()
		off := 0
		for _, p := range parts {
			n := int(p.pages * images.PageSize)
			if err := w.Add(p.addr, buf[off:off+n], p.flags); err != nil {
				return fmt.Errorf("write pages: %w", err)
			}
			lazy.record(p, unreadable(p.addr)) // lazy dump hook
			if p.flags&images.PELazy != 0 {
				st.PagesLazy += p.pages
			}
			off += n
		}
		readTime += t1.Sub(t0)
		writeTime += time.Since(t1)
		done += uint64(size)
		if progress != nil && time.Since(lastProgress) > 100*time.Millisecond {
			progress(done, total)
			lastProgress = time.Now()
		}
	}
	t0 := time.Now()
	if err := w.Close(); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	writeTime += time.Since(t0)
	ok = true
	st.PagesWritten += w.Pages()
	st.MemdumpTime += readTime
	st.MemwriteTime += writeTime
	if progress != nil {
		progress(total, total)
	}
	return nil
}

func readSegments(pid int, segs []sys.Segment, buf []byte, unreadable func(uint64) bool, mem **os.File) error {
	forced := false
	for _, s := range segs {
		if unreadable(s.Addr) {
			forced = true
			break
		}
	}
	if !forced {
		if err := sys.ReadRemoteV(pid, segs, buf); err != nil {
			return fmt.Errorf("read memory of %d: %w", pid, err)
		}
		return nil
	}
	if *mem == nil {
		f, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
		if err != nil {
			return fmt.Errorf("open memory of %d: %w", pid, err)
		}
		*mem = f
	}
	off := 0
	for _, s := range segs {
		if _, err := (*mem).ReadAt(buf[off:off+s.Len], int64(s.Addr)); err != nil {
			return fmt.Errorf("read memory of %d at %#x: %w", pid, s.Addr, err)
		}
		off += s.Len
	}
	return nil
}
