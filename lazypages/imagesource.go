package lazypages

import (
	"github.com/lazyr/lazyr/images"
)

// imageSource serves pages from a CRIU image directory and its parent chain (images.PageChain).
//
// It is a MappedSource: each pages file is mapped read-only, and UFFDIO_COPY reads the page cache
// directly, with no pread into a buffer first. The daemon never touches the mapping itself; the kernel
// reads it with copy_from_user, so even a file truncated behind our back yields EFAULT from the ioctl,
// never SIGBUS.
type imageSource struct {
	chain *images.PageChain
}

// NewImageSource serves the pages of the processes dumped in imagesDir.
// The pagemaps of the processes in the directory's pstree are read here,
// before the daemon says it is ready: a restore that registers a process
// then waits for no image reading (others are read on first use). The
// source is a MappedSource.
func NewImageSource(imagesDir string) (PageSource, error) {
	c, err := images.OpenPageChain(imagesDir)
	if err != nil {
		return nil, err
	}
	c.Preload()
	return &imageSource{chain: c}, nil
}

// MappedPages returns the mapped bytes of the pages from addr on, as far
// as they are contiguous in one pages file, at most n bytes.
func (s *imageSource) MappedPages(pid int, addr uint64, n uint64) ([]byte, error) {
	return s.chain.Mapped(pid, addr, n)
}

func (s *imageSource) ReadPages(pid int, addr uint64, dst []byte) error {
	return s.chain.ReadPages(pid, addr, dst)
}

// Extents lists the runs with data: present here, or in a parent image.
func (s *imageSource) Extents(pid int) ([]Extent, error) {
	runs, err := s.chain.Runs(pid)
	if err != nil {
		return nil, err
	}
	out := make([]Extent, len(runs))
	for i, r := range runs {
		out[i] = Extent{Addr: r.Addr, NrPages: r.NrPages}
	}
	return out, nil
}

func (s *imageSource) Close() error { return s.chain.Close() }
