package pagesrv

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Throughput measurement settings: requests of benchChunk bytes with
// benchWindow of them in flight: 1 MiB of client buffers, the same as the
// plain TCP copy reads into, so both sides work on equally hot memory.
var (
	benchChunk  = 256 << 10
	benchWindow = 4
)

const (
	benchBase   = 0x7f0000000000
	benchPid    = 1
	benchRounds = 3
	tcpChunk    = 1 << 20
)

// MeasureThroughput moves nbytes of pages from a page server to a client
// over loopback, and the same number of bytes through a plain TCP connection
// (one writer, one reader, 1 MiB buffers), and returns both rates in MB/s
// (10^6 bytes per second). The server's source copies every page from
// memory, as reading a frozen process or the page cache does. The two
// transfers alternate for a few rounds and the best round of each counts,
// so a burst of load from other processes skews the ratio less.
func MeasureThroughput(nbytes int64) (pagesrvMBps, tcpMBps float64, err error) {
	if nbytes < tcpChunk {
		nbytes = tcpChunk
	}
	nbytes -= nbytes % tcpChunk
	for range benchRounds {
		tcp, err := measureTCP(nbytes)
		if err != nil {
			return 0, 0, fmt.Errorf("pagesrv: plain TCP copy: %w", err)
		}
		ps, err := measurePagesrv(nbytes)
		if err != nil {
			return 0, 0, fmt.Errorf("pagesrv: page server copy: %w", err)
		}
		pagesrvMBps, tcpMBps = max(pagesrvMBps, ps), max(tcpMBps, tcp)
	}
	return pagesrvMBps, tcpMBps, nil
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / d.Seconds() / 1e6 }

func measurePagesrv(nbytes int64) (float64, error) {
	src := newPatternSource(uint64(nbytes))
	srv, err := NewServer(ServerOptions{Address: "127.0.0.1", Source: src})
	if err != nil {
		return 0, err
	}
	serveErr := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() {
		cancel()
		<-serveErr
	}()
	go func() { serveErr <- srv.Serve(ctx) }()
	c, err := Dial(ctx, "127.0.0.1", srv.Addr().(*net.TCPAddr).Port, nil)
	if err != nil {
		return 0, err
	}
	defer c.Close()

	bufs := make([][]byte, benchWindow)
	for i := range bufs {
		bufs[i] = make([]byte, benchChunk)
	}
	done := make(chan *Call, benchWindow)
	start := time.Now()
	var off, got int64
	for i := 0; i < benchWindow && off < nbytes; i++ {
		c.Go(benchPid, benchBase+uint64(off), bufs[i], done)
		off += int64(benchChunk)
	}
	for got < nbytes {
		call := <-done
		if call.Err != nil {
			return 0, call.Err
		}
		got += int64(len(call.Dst))
		if off < nbytes {
			c.Go(benchPid, benchBase+uint64(off), call.Dst, done)
			off += int64(benchChunk)
		}
	}
	d := time.Since(start)
	if s := srv.Stats(); s.Pages*uint64(os.Getpagesize()) != uint64(nbytes) {
		return 0, fmt.Errorf("server sent %d pages, want %d", s.Pages, nbytes/int64(os.Getpagesize()))
	}
	return mbps(nbytes, d), nil
}

func measureTCP(nbytes int64) (float64, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	werr := make(chan error, 1)
	go func() {
		conn, err := ln.Accept()
		if err != nil {
			werr <- err
			return
		}
		defer conn.Close()
		buf := make([]byte, tcpChunk)
		for i := range buf {
			buf[i] = byte(i)
		}
		for left := nbytes; left > 0; left -= tcpChunk {
			if _, err := conn.Write(buf); err != nil {
				werr <- err
				return
			}
		}
		werr <- nil
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	buf := make([]byte, tcpChunk)
	start := time.Now()
	for got := int64(0); got < nbytes; got += tcpChunk {
		if _, err := io.ReadFull(conn, buf); err != nil {
			return 0, err
		}
	}
	d := time.Since(start)
	if err := <-werr; err != nil {
		return 0, err
	}
	return mbps(nbytes, d), nil
}

// patternSource serves [benchBase, benchBase+size) of pid benchPid from a
// 4 MiB pattern buffer, copied like a read from the page cache would be.
type patternSource struct {
	size    uint64
	pattern []byte
}

func newPatternSource(size uint64) *patternSource {
	p := &patternSource{size: size, pattern: make([]byte, 4<<20)}
	for i := range p.pattern {
		p.pattern[i] = byte(i * 7)
	}
	return p
}

func (p *patternSource) ReadPages(pid int, addr uint64, dst []byte) error {
	if pid != benchPid || addr < benchBase || addr-benchBase+uint64(len(dst)) > p.size {
		return ErrNotInImage
	}
	off := int((addr - benchBase) % uint64(len(p.pattern)))
	for n := 0; n < len(dst); {
		k := copy(dst[n:], p.pattern[off:])
		n += k
		off = 0
	}
	return nil
}

func (p *patternSource) Extents(pid int) ([]Extent, error) {
	if pid != benchPid {
		return nil, fmt.Errorf("pid %d: %w", pid, unix.ESRCH)
	}
	return []Extent{{Addr: benchBase, NrPages: p.size / uint64(os.Getpagesize())}}, nil
}
