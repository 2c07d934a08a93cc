package lazypages

// PageSource supplies the dumped memory of processes.
//
// The daemon may call ReadPages from several goroutines at once (the fault
// loop and the prefetch workers); Extents is called from the fault loop
// only, when a process registers.
type PageSource interface {
	// ReadPages fills dst (a multiple of 4096 bytes) with the dumped pages
	// of process pid starting at addr. Pages the image does not hold are
	// reported with an error wrapping ErrNotInImage (or
	// images.ErrNotInImage); the daemon then maps the zero page there.
	ReadPages(pid int, addr uint64, dst []byte) error
	// Extents lists the dumped page runs of pid: what prefetch copies.
	Extents(pid int) ([]Extent, error)
	Close() error
}

// MappedSource is a PageSource whose pages are in memory already (a
// mapped image file). The daemon copies straight from the returned bytes
// into the process (UFFDIO_COPY reads its source with copy_from_user), with
// no read into a buffer in between.
type MappedSource interface {
	PageSource
	// MappedPages returns the dumped bytes of pid's pages from addr on:
	// at least one page and at most n bytes (whole pages), fewer when the
	// run ends or continues elsewhere. The bytes stay valid until Close
	// and must not be written. A missing first page is reported like
	// ReadPages does. Safe for concurrent use.
	MappedPages(pid int, addr uint64, n uint64) ([]byte, error)
}

// AsyncSource is a PageSource that can have many reads in flight (a page
// server client). The daemon then never waits for a read on its fault
// loop: it starts reads and goes on serving other faults and events; faults
// on pages whose read is in flight wait for that read instead of starting
// another one.
type AsyncSource interface {
	PageSource
	// StartRead begins filling dst like ReadPages and returns at once.
	// done is called exactly once, from any goroutine, with the error
	// ReadPages would have returned; dst must not be touched before.
	// Reads may complete in any order.
	StartRead(pid int, addr uint64, dst []byte, done func(error))
}

// Extent is a run of dumped pages.
type Extent struct {
	Addr    uint64 `json:"addr"`
	NrPages uint64 `json:"nr_pages"`
}

// End is the address just past the extent.
func (e Extent) End() uint64 { return e.Addr + e.NrPages*pageSize }

// Range is an address range registered with a userfaultfd.
type Range struct {
	Start uint64 `json:"start"`
	Len   uint64 `json:"len"`
}

const pageSize = 4096
