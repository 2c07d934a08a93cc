package soccr

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The main scenario: a connection with unread data in the server's receive queue and unsent data in its
// send queue (the client does not read and its window is closed) is dumped on the server side, the
// server socket is closed in repair mode and a new one is restored; the client keeps using its original
// socket and sees every byte once, in order, and no reset.
func TestDumpRestoreEstablished(t *testing.T) {
	for _, addr := range []netip.Addr{lo4, lo6} {
		t.Run(addr.String(), func(t *testing.T) {
			enterNetns(t)
			p := tcpPair(t, addr, func(cli int) {
				// A small receive buffer closes the client's window quickly.
				setInt(t, cli, unix.SOL_SOCKET, unix.SO_RCVBUF, 8192)
			})
			srv, cli := p.srv, p.cli
			setInt(t, srv, unix.SOL_TCP, unix.TCP_NODELAY, 1)
			setInt(t, srv, unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1)
			setInt(t, srv, unix.SOL_TCP, unix.TCP_KEEPIDLE, 77)
			setInt(t, srv, unix.SOL_TCP, unix.TCP_KEEPINTVL, 11)
			setInt(t, srv, unix.SOL_TCP, unix.TCP_KEEPCNT, 5)
			setInt(t, srv, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}

			c2s.write(t, cli, 100000)
			c2s.read(t, srv, 60000)
			s2c.write(t, srv, 5000)
			s2c.read(t, cli, 5000)
			written := s2c.writeSome(t, srv, 400000)
			settle(t, srv)
			settle(t, cli)
			r0 := resets(t)

			l := lock(t, srv)
			st, err := Dump(srv)
			if err != nil {
				t.Fatalf("Dump: %v", err)
			}
			t.Logf("dumped %v", st)
			if st.TCPState != StateEstablished {
				t.Errorf("state %d", st.TCPState)
			}
			if want := localAddrPort(t, srv); st.Src != want {
				t.Errorf("Src %v, want %v", st.Src, want)
			}
			if want := localAddrPort(t, cli); st.Dst != want {
				t.Errorf("Dst %v, want %v", st.Dst, want)
			}
			if st.InqLen != 40000 || !bytes.Equal(st.InQueue, c2s.expect(40000)) {
				t.Errorf("receive queue: %d bytes, want the 40000 unread ones", st.InqLen)
			}
			if st.UnsqLen == 0 || st.OutqLen < st.UnsqLen {
				t.Errorf("send queue %d bytes, unsent %d: want unsent data", st.OutqLen, st.UnsqLen)
			}
			// The send queue holds the last OutqLen bytes written.
			tail := (&stream{sent: 5000 + written - int(st.OutqLen)}).next(int(st.OutqLen))
			if !bytes.Equal(st.OutQueue, tail) {
				t.Errorf("send queue contents differ from the last %d bytes written", st.OutqLen)
			}
			if !st.Nodelay || !st.Keepalive || st.KeepIdle != 77 || st.KeepIntvl != 11 || st.KeepCnt != 5 || !st.ReuseAddr {
				t.Errorf("options not captured: %+v", st)
			}
			if st.OptMask&(OptSACK|OptWscale|OptTimestamps) != OptSACK|OptWscale|OptTimestamps || st.MSS == 0 || !st.HasWindow {
				t.Errorf("stream options not captured: mask %#x mss %d window %v", st.OptMask, st.MSS, st.HasWindow)
			}

			closeFD(t, srv) // in repair mode: nothing is sent to the client
			quiet(t, cli, 200*time.Millisecond, "client after close")

			fd, err := Restore(st)
			if err != nil {
				t.Fatalf("Restore: %v", err)
			}
			track(t, fd)
			if s := tcpState(t, fd); s != StateEstablished {
				t.Fatalf("restored state %d", s)
			}
			if r, _ := InRepair(fd); r {
				t.Errorf("restored socket still in repair mode")
			}
			release(t, l)
			for _, o := range []struct {
				level, opt, want int
				name             string
			}{
				{unix.SOL_TCP, unix.TCP_NODELAY, 1, "TCP_NODELAY"},
				{unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1, "SO_KEEPALIVE"},
				{unix.SOL_TCP, unix.TCP_KEEPIDLE, 77, "TCP_KEEPIDLE"},
				{unix.SOL_TCP, unix.TCP_KEEPINTVL, 11, "TCP_KEEPINTVL"},
				{unix.SOL_TCP, unix.TCP_KEEPCNT, 5, "TCP_KEEPCNT"},
				{unix.SOL_SOCKET, unix.SO_REUSEADDR, 1, "SO_REUSEADDR"},
				{unix.SOL_SOCKET, unix.SO_SNDBUF, st.SndBuf, "SO_SNDBUF"},
				{unix.SOL_SOCKET, unix.SO_RCVBUF, st.RcvBuf, "SO_RCVBUF"},
				{unix.SOL_SOCKET, unix.SO_BUF_LOCK, st.BufLock, "SO_BUF_LOCK"},
			} {
				if v := getInt(t, fd, o.level, o.opt); v != o.want {
					t.Errorf("restored %s = %d, want %d", o.name, v, o.want)
				}
			}

			// Unread data first, then new data both ways; the client drains the send queue.
			c2s.read(t, fd, 40000)
			c2s.write(t, cli, 50000)
			c2s.read(t, fd, 50000)
			s2c.read(t, cli, written)
			s2c.write(t, fd, 20000)
			s2c.read(t, cli, 20000)
			quiet(t, cli, 50*time.Millisecond, "client at the end")
			quiet(t, fd, 50*time.Millisecond, "server at the end")
			noError(t, cli, "client")
			noError(t, fd, "server")
			if s := tcpState(t, cli); s != StateEstablished {
				t.Errorf("client state %d", s)
			}
			if d := resets(t) - r0; d != 0 {
				t.Errorf("%d resets", d)
			}
		})
	}
}

// Dump and leave running: the socket goes back to work and keeps its SO_REUSEADDR.
func TestDumpResume(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	setInt(t, p.srv, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	c2s.write(t, p.cli, 3000)
	settle(t, p.cli)
	st, err := Dump(p.srv)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	if r, _ := InRepair(p.srv); !r {
		t.Fatal("Dump did not leave the socket in repair mode")
	}
	if !st.ReuseAddr || st.InqLen != 3000 {
		t.Errorf("ReuseAddr %v InqLen %d", st.ReuseAddr, st.InqLen)
	}
	if err := Resume(p.srv, st); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if v := getInt(t, p.srv, unix.SOL_SOCKET, unix.SO_REUSEADDR); v != 1 {
		t.Errorf("SO_REUSEADDR after Resume = %d", v)
	}
	c2s.read(t, p.srv, 3000)
	s2c.write(t, p.srv, 1000)
	s2c.read(t, p.cli, 1000)
	noError(t, p.cli, "client")
}

func TestDumpErrors(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	if _, err := Dump(p.lis); err == nil {
		t.Error("Dump of a listening socket succeeded")
	}
	if r, err := InRepair(p.lis); err != nil || r {
		t.Errorf("listener left in repair mode after a failed Dump (%v)", err)
	}
	udp, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, udp)
	if _, err := Dump(udp); err == nil {
		t.Error("Dump of a UDP socket succeeded")
	}

	st, err := Dump(p.srv)
	if err != nil {
		t.Fatal(err)
	}
	bad := *st
	bad.InQueue = []byte("x")
	if _, err := Restore(&bad); err == nil {
		t.Error("Restore accepted a receive queue that does not match InqLen")
	}
	bad = *st
	bad.TCPState = StateListen
	if _, err := Restore(&bad); err == nil {
		t.Error("Restore accepted a listening state")
	}
}
