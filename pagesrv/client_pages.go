package pagesrv

import (
	"errors"
	"fmt"
)

// Call is one asynchronous page read (see Client.Go).
type Call struct {
	Pid  int
	Addr uint64
	Dst  []byte // filled by the reply; do not touch until the call is done
	// Absent lists the pages that are not in the image; they were
	// zero-filled in Dst and Err is a *NotInImageError.
	Absent []Extent
	Err    error
	Done   chan *Call // receives the call when it completes (Go)

	fn func(*Call) // called when it completes (GoFunc)
}

// complete hands the finished call to its caller.
func (call *Call) complete() {
	if call.fn != nil {
		call.fn(call)
		return
	}
	call.Done <- call
}

// Go starts reading len(dst) bytes (whole pages, at most MaxRequestPages)
// of process pid at addr into dst and returns at once; the call is sent on
// done (or on a new channel if done is nil) when the reply is in. Any number
// of calls may be in flight: the server answers them in order.
//
// done must be buffered (the reader must never block on it); Go panics
// otherwise, as net/rpc does, because that is a programming error.
func (c *Client) Go(pid int, addr uint64, dst []byte, done chan *Call) *Call {
	if done == nil {
		done = make(chan *Call, 1)
	} else if cap(done) == 0 {
		panic("pagesrv: Client.Go: done channel is unbuffered")
	}
	call := &Call{Pid: pid, Addr: addr, Dst: dst, Done: done}
	c.start(call)
	return call
}

// GoFunc is Go with a callback instead of a channel: fn is called once
// with the finished call, on the client's reader goroutine (on the
// caller's for a request that cannot be sent, and on whichever goroutine
// notices a broken connection or calls Close for the calls it fails). fn
// must not block: every reply of the connection waits for it. It saves a channel hand-off and a
// goroutine wake-up per read (a lazy-pages daemon keeps dozens in flight).
func (c *Client) GoFunc(pid int, addr uint64, dst []byte, fn func(*Call)) {
	c.start(&Call{Pid: pid, Addr: addr, Dst: dst, fn: fn})
}

func (c *Client) start(call *Call) {
	pid, addr, dst := call.Pid, call.Addr, call.Dst
	ps := c.pageSize
	if pid <= 0 || pid > 1<<31-1 || len(dst) == 0 || len(dst)%ps != 0 || len(dst)/ps > c.maxPages || addr%uint64(ps) != 0 {
		call.Err = fmt.Errorf("%w: pid %d, %d bytes at %#x (whole aligned pages, at most %d)",
			ErrBadRequest, pid, len(dst), addr, c.maxPages)
		call.complete()
		return
	}
	id, err := c.register(&pending{want: TypePages, call: call})
	if err != nil {
		call.Err = err
		call.complete()
		return
	}
	// On a send failure fail() finishes every pending call, this one too.
	c.send(id, MsgGetPages{Pid: uint32(pid), NrPages: uint32(len(dst) / ps), Addr: addr})
}

// ReadPages reads len(dst) bytes (whole pages) of process pid at addr into
// dst, splitting large reads into pipelined requests. Pages that are not in
// the image are zero-filled and reported by a *NotInImageError (matching
// ErrNotInImage) that lists them; every other page has been read.
func (c *Client) ReadPages(pid int, addr uint64, dst []byte) error {
	chunk := c.maxPages * c.pageSize
	if len(dst) <= chunk {
		call := <-c.Go(pid, addr, dst, make(chan *Call, 1)).Done
		return call.Err
	}
	n := (len(dst) + chunk - 1) / chunk
	done := make(chan *Call, n)
	for off := 0; off < len(dst); off += chunk {
		c.Go(pid, addr+uint64(off), dst[off:min(off+chunk, len(dst))], done)
	}
	var firstErr error
	var absent []Extent
	for range n {
		call := <-done
		switch {
		case call.Err == nil:
		case call.Absent != nil:
			absent = append(absent, call.Absent...)
		case firstErr == nil:
			firstErr = call.Err
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if absent != nil {
		sortExtents(absent)
		return &NotInImageError{Pid: pid, Absent: absent}
	}
	return nil
}

// Extents returns the page extents of pid that exist on the server, sorted
// by address and merged.
func (c *Client) Extents(pid int) ([]Extent, error) {
	if pid <= 0 || pid > 1<<31-1 {
		return nil, fmt.Errorf("%w: pid %d", ErrBadRequest, pid)
	}
	p := &pending{want: TypeExtents, pid: uint32(pid)}
	if err := c.roundTrip(p, MsgGetExtents{Pid: uint32(pid)}); err != nil {
		return nil, fmt.Errorf("extents of pid %d: %w", pid, err)
	}
	ext, err := normalizeExtents(p.ext, uint64(c.pageSize))
	if err != nil {
		return nil, errors.Join(ErrProtocol, err)
	}
	return ext, nil
}

func sortExtents(e []Extent) {
	// Chunks complete in order, so this is nearly sorted already.
	for i := 1; i < len(e); i++ {
		for j := i; j > 0 && e[j].Addr < e[j-1].Addr; j-- {
			e[j], e[j-1] = e[j-1], e[j]
		}
	}
}
