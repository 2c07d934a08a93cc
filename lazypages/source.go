package lazypages

// PageSource supplies the dumped memory of processes.
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
