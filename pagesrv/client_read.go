package pagesrv

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

func readFull(r io.Reader, b []byte) (int, error) { return io.ReadFull(r, b) }

func errnoFrom(v uint32) unix.Errno { return unix.Errno(v) }

// readLoop is the client's only reader: it demultiplexes replies by id.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	var hdr [HeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			c.fail(c.readErr(err, false))
			return
		}
		if err := c.readMessage(hdr[:]); err != nil {
			c.fail(err)
			return
		}
	}
}

// readErr turns a read failure into the error pending requests get.
func (c *Client) readErr(err error, midMessage bool) error {
	switch {
	case errors.Is(err, ErrTimeout):
		return fmt.Errorf("%w: %s: %w", ErrConnLost, c.remote, err)
	case midMessage && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		return c.lost(fmt.Errorf("%w: %w", ErrTruncated, io.ErrUnexpectedEOF))
	}
	return c.lost(err)
}

// readMessage reads and handles the rest of the message whose header is hdr.
func (c *Client) readMessage(hdr []byte) error {
	h, err := ParseHeader(hdr, c.pageSize)
	if err != nil {
		return fmt.Errorf("from %s: %w", c.remote, err)
	}
	if h.Type.fromClient() || h.Type == TypeHelloAck {
		return fmt.Errorf("%w: from %s: unexpected %v", ErrProtocol, c.remote, h.Type)
	}
	if h.Type == TypePages {
		return c.readPages(h)
	}
	body, err := c.readBody(int(h.Length))
	if err != nil {
		return c.readErr(err, true)
	}
	m, err := decodeBody(h, body, c.pageSize)
	if err != nil {
		return fmt.Errorf("from %s: %v message: %w", c.remote, h.Type, err)
	}
	return c.dispatch(h, m)
}

// readBody reads an n-byte body (n already bounded by ParseHeader) into the
// reused body buffer, growing it only as bytes actually arrive so that a
// lying length cannot make us allocate what was never sent.
func (c *Client) readBody(n int) ([]byte, error) {
	buf := c.body[:0]
	for len(buf) < n {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(n, max(2*cap(buf), 64<<10)))
			copy(nb, buf)
			buf = nb
		}
		k := min(cap(buf), n)
		m, err := io.ReadFull(c.br, buf[len(buf):k])
		buf = buf[:len(buf)+m]
		if err != nil {
			c.body = buf
			return nil, err
		}
	}
	c.body = buf
	return buf, nil
}

// dispatch handles every reply but Pages.
func (c *Client) dispatch(h Header, m Message) error {
	switch m := m.(type) {
	case MsgError:
		if h.ID == 0 {
			return fmt.Errorf("from %s: %w", c.remote, remoteError(m))
		}
		c.mu.Lock()
		p := c.pending[h.ID]
		if p != nil {
			delete(c.pending, h.ID)
			c.npending.Add(-1)
		}
		c.mu.Unlock()
		if p == nil {
			return fmt.Errorf("%w: Error for unknown request %d", ErrProtocol, h.ID)
		}
		p.finish(remoteError(m))
	case MsgExtents:
		p, err := c.peek(h.ID, TypeExtents)
		if err != nil {
			return err
		}
		if m.Pid != p.pid {
			return fmt.Errorf("%w: extents of pid %d for a request about %d", ErrProtocol, m.Pid, p.pid)
		}
		p.ext = append(p.ext, m.Extents...)
		if h.Flags&FlagMore == 0 {
			c.take(h.ID, TypeExtents)
			p.finish(nil)
		}
	case MsgFileList:
		p, err := c.peek(h.ID, TypeFileList)
		if err != nil {
			return err
		}
		p.files = append(p.files, m.Files...)
		if h.Flags&FlagMore == 0 {
			c.take(h.ID, TypeFileList)
			p.finish(nil)
		}
	case MsgFileData:
		p, err := c.peek(h.ID, TypeFileData)
		if err != nil {
			return err
		}
		if err := p.sink.write(m.Offset, m.Data); err != nil {
			return err
		}
		c.bytes.Add(uint64(len(m.Data)))
	case MsgFileEnd:
		p, err := c.take(h.ID, TypeFileData)
		if err != nil {
			return err
		}
		p.finish(p.sink.end(m))
	case MsgDoneAck:
		p, err := c.take(h.ID, TypeDoneAck)
		if err != nil {
			return err
		}
		if m.Pid != p.pid {
			return fmt.Errorf("%w: DoneAck for pid %d, sent Done for %d", ErrProtocol, m.Pid, p.pid)
		}
		p.finish(nil)
	default:
		return fmt.Errorf("%w: unexpected %v", ErrProtocol, h.Type)
	}
	return nil
}

// readPages reads a Pages reply straight into the destination of its call.
func (c *Client) readPages(h Header) error {
	if _, err := io.ReadFull(c.br, c.meta[:]); err != nil {
		return c.readErr(err, true)
	}
	m, nruns, err := decodePagesMeta(c.meta[:], c.pageSize)
	if err != nil {
		return fmt.Errorf("from %s: Pages message: %w", c.remote, err)
	}
	if int(h.Length) < pagesFixed+nruns*runSize {
		return fmt.Errorf("%w: Pages message of %d bytes with %d runs", ErrProtocol, h.Length, nruns)
	}
	if cap(c.runsRaw) < nruns*runSize {
		c.runsRaw = make([]byte, 0, runSize*MaxRequestBytes/c.pageSize)
	}
	raw := c.runsRaw[:nruns*runSize]
	if _, err := io.ReadFull(c.br, raw); err != nil {
		return c.readErr(err, true)
	}
	runs, present, err := decodeRuns(raw, nruns, &m, c.runs[:0])
	if err != nil {
		return fmt.Errorf("from %s: Pages message: %w", c.remote, err)
	}
	c.runs = runs
	if int(h.Length) != pagesFixed+nruns*runSize+present*c.pageSize {
		return fmt.Errorf("%w: Pages message of %d bytes for %d present pages", ErrProtocol, h.Length, present)
	}
	p, err := c.take(h.ID, TypePages)
	if err != nil {
		return err
	}
	call := p.call
	if uint64(m.Pid) != uint64(call.Pid) || m.Addr != call.Addr || int(m.NrPages)*c.pageSize != len(call.Dst) {
		err := fmt.Errorf("%w: Pages {pid %d, %#x, %d pages} answer a request for {pid %d, %#x, %d pages}",
			ErrProtocol, m.Pid, m.Addr, m.NrPages, call.Pid, call.Addr, len(call.Dst)/c.pageSize)
		p.finish(err)
		return err
	}
	switch m.Status {
	case StatusOK:
		runs = append(runs[:0], Run{NrPages: m.NrPages, Present: true})
	case StatusNotInImage:
		runs = append(runs[:0], Run{NrPages: m.NrPages})
	}
	var absent []Extent
	off := 0
	for _, r := range runs {
		n := int(r.NrPages) * c.pageSize
		if r.Present {
			if _, err := io.ReadFull(c.br, call.Dst[off:off+n]); err != nil {
				err = c.readErr(err, true)
				p.finish(err)
				return err
			}
		} else {
			clear(call.Dst[off : off+n])
			absent = append(absent, Extent{Addr: call.Addr + uint64(off), NrPages: uint64(r.NrPages)})
		}
		off += n
	}
	c.pages.Add(uint64(present))
	c.absent.Add(uint64(int(m.NrPages) - present))
	c.bytes.Add(uint64(present * c.pageSize))
	call.Absent = absent
	if absent != nil {
		call.Err = &NotInImageError{Pid: call.Pid, Absent: absent}
	}
	p.finish(nil)
	return nil
}
