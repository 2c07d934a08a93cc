package pagesrv

import (
	"math/bits"

	"golang.org/x/sys/unix"
)

// bufPool recycles reply buffers by power-of-two size class. It belongs to
// the server loop (no locking) and keeps at most poolKeep buffers a class so
// a burst does not pin memory forever.
type bufPool struct {
	free [32][][]byte
}

const (
	poolKeep     = 16
	minPoolClass = 12 // 4 KiB
)

func sizeClass(n int) int {
	if n <= 1<<minPoolClass {
		return minPoolClass
	}
	return bits.Len(uint(n - 1))
}

// get returns a buffer of length n.
func (p *bufPool) get(n int) []byte {
	c := sizeClass(n)
	if c >= len(p.free) {
		return make([]byte, n)
	}
	if l := len(p.free[c]); l > 0 {
		b := p.free[c][l-1]
		p.free[c] = p.free[c][:l-1]
		return b[:n]
	}
	return make([]byte, n, 1<<c)
}

// put returns a buffer obtained from get.
func (p *bufPool) put(b []byte) {
	c := bits.Len(uint(cap(b))) - 1
	if cap(b) != 1<<c || c < minPoolClass || c >= len(p.free) || len(p.free[c]) >= poolKeep {
		return
	}
	p.free[c] = append(p.free[c], b[:0])
}

// outq is a connection's queue of bytes waiting for the socket.
type outq struct {
	bufs  []outBuf // bufs[head].b[off:] is next
	head  int
	off   int
	bytes int // bytes queued
	iov   [][]byte
}

// outBuf is a queued buffer: the pool's, or lent (bytes of a MappedSource, read-only, not ours).
type outBuf struct {
	b    []byte
	lent bool
}

// push queues b; the queue owns it until written, then returns it to the pool.
func (q *outq) push(b []byte) {
	if len(b) == 0 {
		return
	}
	q.bufs = append(q.bufs, outBuf{b: b})
	q.bytes += len(b)
}

// pushLent queues bytes the queue does not own (a MappedSource's): written from where they are, never
// written to, never pooled.
func (q *outq) pushLent(b []byte) {
	if len(b) == 0 {
		return
	}
	q.bufs = append(q.bufs, outBuf{b: b, lent: true})
	q.bytes += len(b)
}

// appendCopy queues a copy of b, filling the tail buffer first (used for the
// many small writes crypto/tls makes through loopConn).
func (q *outq) appendCopy(pool *bufPool, b []byte) {
	q.bytes += len(b)
	if n := len(q.bufs); n > q.head && !q.bufs[n-1].lent {
		t := q.bufs[n-1].b
		k := min(cap(t)-len(t), len(b))
		q.bufs[n-1].b = append(t, b[:k]...)
		b = b[k:]
	}
	for len(b) > 0 {
		t := pool.get(max(len(b), 64<<10))[:0]
		k := min(cap(t), len(b))
		q.bufs = append(q.bufs, outBuf{b: append(t, b[:k]...)})
		b = b[k:]
	}
}

// flush writes as much as the socket takes. It returns the bytes written and
// unix.EAGAIN when the socket is full.
func (q *outq) flush(fd int, pool *bufPool) (int, error) {
	total := 0
	for q.bytes > 0 {
		q.iov = q.iov[:0]
		for i := q.head; i < len(q.bufs) && len(q.iov) < 64; i++ {
			b := q.bufs[i].b
			if i == q.head {
				b = b[q.off:]
			}
			q.iov = append(q.iov, b)
		}
		n, err := unix.Writev(fd, q.iov)
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			total += n
			q.consume(n, pool)
		}
		if err != nil {
			return total, err
		}
		if n == 0 {
			return total, unix.EAGAIN
		}
	}
	return total, nil
}

func (q *outq) consume(n int, pool *bufPool) {
	q.bytes -= n
	for n > 0 {
		rest := len(q.bufs[q.head].b) - q.off
		if n < rest {
			q.off += n
			return
		}
		n -= rest
		if !q.bufs[q.head].lent {
			pool.put(q.bufs[q.head].b)
		}
		q.bufs[q.head] = outBuf{}
		q.head++
		q.off = 0
	}
	if q.head == len(q.bufs) {
		q.bufs, q.head = q.bufs[:0], 0
	}
}

// release returns every queued buffer to the pool.
func (q *outq) release(pool *bufPool) {
	for _, b := range q.bufs[q.head:] {
		if !b.lent {
			pool.put(b.b)
		}
	}
	*q = outq{}
}
