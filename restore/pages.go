package restore

import (
	"fmt"
	"time"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/images"
)

const fillChunk = 4 << 20

// fillEager copies the image's pages into the task with process_vm_writev, except those skip says are
// left to the lazy-pages daemon. It returns the number of pages written.
func fillEager(t *compel.Task, p *plan, skip func(images.Extent) bool, progress func(done, total uint64)) (uint64, error) {
	pages, err := p.dir.OpenPages(p.pagemap)
	if err != nil {
		return 0, err
	}
	defer pages.Close()
	var total uint64
	for _, e := range p.pagemap.Extents {
		if !skip(e) {
			total += e.NrPages * images.PageSize
		}
	}
	buf := make([]byte, fillChunk)
	var done uint64
	last := time.Now()
	for _, e := range p.pagemap.Extents {
		if skip(e) {
			continue
		}
		for off := uint64(0); off < e.NrPages*images.PageSize; off += fillChunk {
			n := e.NrPages*images.PageSize - off
			if n > fillChunk {
				n = fillChunk
			}
			addr := e.Vaddr + off
			if err := pages.ReadAt(buf[:n], addr); err != nil {
				return done / images.PageSize, fmt.Errorf("read pages at %#x: %w", addr, err)
			}
			if err := t.WriteMem(addr, buf[:n]); err != nil {
				return done / images.PageSize, err
			}
			done += n
			if progress != nil && time.Since(last) > 100*time.Millisecond {
				progress(done, total)
				last = time.Now()
			}
		}
	}
	if progress != nil {
		progress(total, total)
	}
	return done / images.PageSize, nil
}
