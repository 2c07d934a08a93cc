package lazypages

// prefetchStep copies one chunk of some process's remaining pages. Chunks
// grow from 64 KiB to 4 MiB while no fault comes in and shrink back on the
// next fault: small chunks keep the delay a fault can see low right after
// activity, big ones make a quiet transfer efficient. Processes take turns.
func (d *daemon) prefetchStep() {
	for tries := 0; tries < len(d.order); tries++ {
		d.rr = (d.rr + 1) % len(d.order)
		p := d.order[d.rr]
		if p.done || p.lazy.pending == 0 {
			continue
		}
		r, ok := p.lazy.nextRun(p.cursor, d.chunk/pageSize)
		if !ok {
			continue
		}
		p.cursor = r.addr + r.bytes()
		if err := d.fill(p, r, false); err != nil && err != errRetry {
			return
		}
		d.chunk = min(d.chunk*2, prefetchMaxChunk)
		d.checkComplete(p)
		return
	}
}
