package soccr

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Megabytes in both queues: the refill has to go in many skbs (the receive queue takes at most
// MAX_SKB_FRAGS pages per call) and needs buffer room beyond the defaults.
func TestRestoreLargeQueues(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	// Autotuning grows a receive buffer only as the application reads; fix it (SO_BUF_LOCK then records
	// the lock, which the restore must keep).
	setInt(t, p.srv, unix.SOL_SOCKET, unix.SO_RCVBUF, 2<<20)
	r0 := resets(t)
	// Neither side reads: each fills the other's receive queue and then its own send queue.
	for i := 0; i < 50; i++ {
		c2s.writeSome(t, p.cli, 1<<20)
		s2c.writeSome(t, p.srv, 1<<20)
		time.Sleep(5 * time.Millisecond)
	}
	settle(t, p.srv)
	settle(t, p.cli)

	l := lock(t, p.srv)
	t0 := time.Now()
	st, err := Dump(p.srv)
	dumpTime := time.Since(t0)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	if st.InqLen < 1<<20 || st.OutqLen < 1<<20 || st.BufLock != 2 {
		t.Fatalf("queues smaller than wanted or buffer not locked: %v, lock %d", st, st.BufLock)
	}
	closeFD(t, p.srv)
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, fd)
	t0 = time.Now()
	if err := RestoreInto(fd, st); err != nil {
		t.Fatalf("RestoreInto: %v", err)
	}
	restoreTime := time.Since(t0)
	release(t, l)
	if err := Resume(fd, st); err != nil {
		t.Fatal(err)
	}
	if v := getInt(t, fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK); v != 2 {
		t.Errorf("restored SO_BUF_LOCK %d, want 2 (SOCK_RCVBUF_LOCK)", v)
	}
	if v := getInt(t, fd, unix.SOL_SOCKET, unix.SO_RCVBUF); v != st.RcvBuf {
		t.Errorf("restored SO_RCVBUF %d, want %d", v, st.RcvBuf)
	}
	t.Logf("receive queue %d bytes, send queue %d (%d unsent): Dump %v, RestoreInto %v",
		st.InqLen, st.OutqLen, st.UnsqLen, dumpTime.Round(time.Microsecond), restoreTime.Round(time.Microsecond))

	// Drain both directions at once: each side's reads open the window the other side waits for.
	drain(t, []reader{{p.cli, s2c, s2c.sent}, {fd, c2s, c2s.sent}})
	noError(t, p.cli, "client")
	noError(t, fd, "server")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}

type reader struct {
	fd int
	s  *stream
	n  int // bytes still to read
}

// drain reads from several sockets as data arrives until each has delivered its n bytes, checking every
// byte against its stream.
func drain(t *testing.T, rs []reader) {
	t.Helper()
	buf := make([]byte, 256<<10)
	deadline := time.Now().Add(timeout)
	for {
		var pfds []unix.PollFd
		for _, r := range rs {
			if r.n > 0 {
				pfds = append(pfds, unix.PollFd{Fd: int32(r.fd), Events: unix.POLLIN})
			}
		}
		if len(pfds) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("drain timed out: %+v", rs)
		}
		if _, err := unix.Poll(pfds, 100); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		for i := range rs {
			r := &rs[i]
			if r.n == 0 {
				continue
			}
			k, _, err := unix.Recvfrom(r.fd, buf[:min(len(buf), r.n)], unix.MSG_DONTWAIT)
			if err == unix.EAGAIN {
				continue
			}
			if err != nil || k == 0 {
				t.Fatalf("%s: read with %d bytes to go: %d, %v", r.s.name, r.n, k, err)
			}
			if d := firstDiff(buf[:k], r.s.expect(k)); d >= 0 {
				t.Fatalf("%s: byte %d of the stream is wrong", r.s.name, r.s.recv+d)
			}
			r.s.recv += k
			r.n -= k
		}
	}
}
