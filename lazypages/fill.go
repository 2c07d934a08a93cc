package lazypages

import (
	"errors"
	"fmt"

	"github.com/lazyr/lazyr/uffd"
	"golang.org/x/sys/unix"
)

// counters are what one filler (the loop, or a worker) copied; workers add
// theirs to the daemon's Stats when they stop.
type counters struct {
	copied   uint64 // pages
	existing uint64 // EEXIST: present already
	zero     uint64 // zero pages mapped for pages the source lacks
}

func isNotInImage(err error) bool {
	return errors.Is(err, ErrNotInImage)
}

// filler copies runs from a synchronous source into a process. Each
// goroutine that copies has its own (the buffer is not shared).
type filler struct {
	src    PageSource
	mapped MappedSource // src, when it is one: no buffer needed
	buf    []byte
	c      counters
}

func newFiller(src PageSource, bufSize int) *filler {
	f := &filler{src: src}
	if m, ok := src.(MappedSource); ok {
		f.mapped = m
	} else {
		f.buf = make([]byte, bufSize)
	}
	return f
}

// fetch returns source bytes for the start of r: all of r, or a shorter
// prefix (a mapped source's run continues elsewhere in its file; onePage
// asks for the first page only). An error wrapping ErrNotInImage means the
// first page is not in the image.
func (f *filler) fetch(pid int, r run, onePage bool) ([]byte, error) {
	n := r.bytes()
	if onePage {
		n = pageSize
	}
	if f.mapped != nil {
		return f.mapped.MappedPages(pid, r.src, n)
	}
	n = min(n, uint64(len(f.buf)))
	b := f.buf[:n]
	if err := f.src.ReadPages(pid, r.src, b); err != nil {
		if isNotInImage(err) && n > pageSize {
			// Some page is missing; the caller goes page by page.
			return nil, errSplit
		}
		return nil, err
	}
	return b, nil
}

// errSplit: a multi-page read found a page missing somewhere.
var errSplit = errors.New("split the read")

// fill makes the pages of r present: copied from the source, or the zero
// page where the source has nothing (never dumped, like any page outside
// the image). It returns how many bytes from r.addr are present now and,
// when it stopped early, why: the errno of a copy it cannot deal with
// itself (EAGAIN: an event must be read first; ESRCH; ENOENT), or err for
// a failure (page source, unexpected ioctl error).
func (f *filler) fill(u *uffd.FD, pid int, r run) (done uint64, errno unix.Errno, err error) {
	onePage := false
	for done < r.bytes() {
		rest := run{addr: r.addr + done, src: r.src + done, npages: r.npages - done/pageSize}
		data, err := f.fetch(pid, rest, onePage)
		switch {
		case err == errSplit:
			onePage = true
			continue
		case isNotInImage(err):
			// Listed as dumped but the source has no data: like any page
			// not in the image, it reads as zero.
			n, errno := u.ZeroPageErrno(rest.addr, pageSize, 0)
			switch errno {
			case 0:
				f.c.zero += uint64(n) / pageSize
			case unix.EEXIST:
				f.c.existing++
			default:
				return done, errno, wrapErrno("UFFDIO_ZEROPAGE", rest.addr, errno)
			}
			done += pageSize
			continue
		case err != nil:
			return done, 0, fmt.Errorf("page source: pages [%#x,+%#x): %w", rest.src, rest.bytes(), err)
		}
		n, errno := f.copy(u, rest.addr, data)
		done += n
		if errno != 0 {
			return done, errno, wrapErrno("UFFDIO_COPY", rest.addr+n, errno)
		}
	}
	return done, 0, nil
}

// copy UFFDIO_COPYs data to addr. It returns how many bytes from addr are
// present afterwards (copied, or found present: EEXIST) and the errno
// that stopped it early, if any.
func (f *filler) copy(u *uffd.FD, addr uint64, data []byte) (uint64, unix.Errno) {
	var done uint64
	for done < uint64(len(data)) {
		n, errno := u.CopyErrno(addr+done, data[done:], 0)
		if n > 0 {
			f.c.copied += uint64(n) / pageSize
			done += uint64(n)
		}
		switch {
		case errno == 0:
		case errno == unix.EAGAIN && n > 0:
			// A partial copy: retrying the rest reports the cause.
		case errno == unix.EEXIST:
			// Present already (filled before it was registered, or by
			// a concurrent copy): done.
			f.c.existing++
			done += pageSize
		default:
			return done, errno
		}
	}
	return done, 0
}

// wrapErrno gives an errno that stopped a fill its context. The errnos
// callers handle (EAGAIN, ESRCH, ENOENT) come back as errno alone.
func wrapErrno(op string, addr uint64, errno unix.Errno) error {
	switch errno {
	case unix.EAGAIN, unix.ESRCH, unix.ENOENT:
		return nil
	}
	return fmt.Errorf("%s at %#x: %w", op, addr, errno)
}
