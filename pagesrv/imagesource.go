package pagesrv

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/lazyr/lazyr/images"
	"golang.org/x/sys/unix"
)

// imageSource serves pages from a CRIU image directory and its parent chain (images.PageChain). Runs
// marked only PE_LAZY have no data here: they are not in the image.
type imageSource struct {
	chain *images.PageChain
}

// NewImageSource serves the pages of the processes dumped in dir. Pagemaps
// are read on first use per process. The returned Source also implements
// io.Closer, which closes the image files; it is safe for concurrent use.
func NewImageSource(dir string) (Source, error) {
	c, err := images.OpenPageChain(dir)
	if err != nil {
		return nil, fmt.Errorf("pagesrv: %w", err)
	}
	return &imageSource{chain: c}, nil
}

// noPagemap makes a process the images do not hold reach the client as "not found" with ESRCH.
func noPagemap(pid int, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("pid %d has no pagemap: %w: %w", pid, unix.ESRCH, err)
	}
	return err
}

func (s *imageSource) ReadPages(pid int, addr uint64, dst []byte) error {
	return noPagemap(pid, s.chain.ReadPages(pid, addr, dst))
}

// MappedPages makes the source a MappedSource: the server writes the mapped page cache to the socket
// (writev reads it in the kernel, so a file truncated behind our back fails the write, never SIGBUS).
func (s *imageSource) MappedPages(pid int, addr uint64, n uint64) ([]byte, error) {
	b, err := s.chain.Mapped(pid, addr, n)
	return b, noPagemap(pid, err)
}

// Extents lists the runs that have data, here or in a parent image.
func (s *imageSource) Extents(pid int) ([]Extent, error) {
	runs, err := s.chain.Runs(pid)
	if err != nil {
		return nil, noPagemap(pid, err)
	}
	out := make([]Extent, len(runs))
	for i, r := range runs {
		out[i] = Extent{Addr: r.Addr, NrPages: r.NrPages}
	}
	return out, nil
}

// Close closes every image file of the chain.
func (s *imageSource) Close() error { return s.chain.Close() }
