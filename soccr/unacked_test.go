package soccr

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Data the server sent but the client never acknowledged is restored as sent-unacknowledged: the
// restored socket retransmits it, and the client, which did receive it, must see it exactly once. To get
// there the server's own packets carry the lock's pass mark, so they reach the client while the client's
// acknowledgements are dropped.
func TestRestoreUnacked(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	srv, cli := p.srv, p.cli
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	c2s.write(t, cli, 100)
	c2s.read(t, srv, 100)
	r0 := resets(t)

	setInt(t, srv, unix.SOL_SOCKET, unix.SO_MARK, PacketMark)
	l := lock(t, srv)
	s2c.write(t, srv, 5000)
	c2s.write(t, cli, 3000) // dropped: stays queued in the client
	settle(t, srv)
	if n := ioctlInt(t, cli, unix.SIOCINQ); n != 5000 {
		t.Fatalf("client received %d bytes, want 5000", n)
	}

	st, err := Dump(srv)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	if st.OutqLen != 5000 || st.UnsqLen != 0 || st.InqLen != 0 {
		t.Fatalf("dumped %v: want 5000 sent-unacknowledged bytes and nothing else", st)
	}
	closeFD(t, srv)
	fd, err := Restore(st)
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	track(t, fd)
	release(t, l)

	s2c.read(t, cli, 5000)
	c2s.read(t, fd, 3000)
	s2c.write(t, fd, 1000)
	s2c.read(t, cli, 1000)
	deadline := time.Now().Add(timeout)
	for ioctlInt(t, fd, unix.SIOCOUTQ) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("restored send queue never acknowledged (%d bytes left)", ioctlInt(t, fd, unix.SIOCOUTQ))
		}
		time.Sleep(10 * time.Millisecond)
	}
	quiet(t, cli, 50*time.Millisecond, "client at the end")
	noError(t, fd, "server")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}
