package soccr

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// checkpoint dumps the server under a network lock, closes it and restores it. See checkpointWith.
func checkpoint(t *testing.T, srv int, want int) int {
	t.Helper()
	return checkpointWith(t, srv, want, func() {})
}

// CLOSE_WAIT: the client has sent data and its FIN; the server has read nothing. The peer's FIN must be
// back in the restored receive queue, after the data.
func TestRestoreCloseWait(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo6, nil)
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	r0 := resets(t)
	c2s.write(t, p.cli, 1000)
	if err := unix.Shutdown(p.cli, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.srv, StateCloseWait, "server")

	fd := checkpoint(t, p.srv, StateCloseWait)
	c2s.read(t, fd, 1000)
	readEOF(t, fd, "server")
	s2c.write(t, fd, 2000)
	s2c.read(t, p.cli, 2000)
	closeFD(t, fd)
	readEOF(t, p.cli, "client")
	noError(t, p.cli, "client")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// FIN_WAIT2: the server has sent its FIN and the client acknowledged it; the client can still send.
func TestRestoreFinWait2(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	r0 := resets(t)
	s2c.write(t, p.srv, 500)
	if err := unix.Shutdown(p.srv, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	s2c.read(t, p.cli, 500)
	readEOF(t, p.cli, "client")
	c2s.write(t, p.cli, 700) // unread by the server: goes into the dump
	waitState(t, p.srv, StateFinWait2, "server")
	settle(t, p.cli)

	fd := checkpoint(t, p.srv, StateFinWait2)
	c2s.read(t, fd, 700)
	c2s.write(t, p.cli, 3000)
	c2s.read(t, fd, 3000)
	if err := unix.Shutdown(p.cli, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	readEOF(t, fd, "server")
	noError(t, p.cli, "client")
	noError(t, fd, "server")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// FIN_WAIT1: the server wrote data and shut down while the lock held everything back, so data and FIN
// are still unsent; after the restore both reach the client.
func TestRestoreFinWait1(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	r0 := resets(t)
	fd := checkpointWith(t, p.srv, StateFinWait1, func() {
		s2c.write(t, p.srv, 700)
		if err := unix.Shutdown(p.srv, unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		waitState(t, p.srv, StateFinWait1, "server")
	})
	s2c.read(t, p.cli, 700)
	readEOF(t, p.cli, "client")
	c2s.write(t, p.cli, 100)
	c2s.read(t, fd, 100)
	waitState(t, fd, StateFinWait2, "server")
	noError(t, p.cli, "client")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// LAST_ACK: the client closed first, then the server wrote and closed behind the lock. The restore needs
// a forged FIN from the client (which passes the lock by its mark) and then our own FIN.
func TestRestoreLastAck(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	s2c := &stream{name: "server->client"}
	r0 := resets(t)
	if err := unix.Shutdown(p.cli, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.srv, StateCloseWait, "server")
	fd := checkpointWith(t, p.srv, StateLastAck, func() {
		s2c.write(t, p.srv, 300)
		if err := unix.Shutdown(p.srv, unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		waitState(t, p.srv, StateLastAck, "server")
	})
	s2c.read(t, p.cli, 300)
	readEOF(t, p.cli, "client")
	waitState(t, fd, StateClose, "server") // the client's ACK of our FIN arrived
	noError(t, p.cli, "client")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// CLOSING (both FINs sent, ours not yet acknowledged) cannot be produced on loopback with a lock that
// holds both directions, so it is built from a FIN_WAIT1 dump: the client's FIN, which the lock dropped,
// is declared received. The restore must forge that FIN and reach CLOSING; after the release both sides
// finish the close without a reset.
func TestRestoreClosing(t *testing.T) {
	enterNetns(t)
	p := tcpPair(t, lo4, nil)
	r0 := resets(t)
	fd := checkpointWith(t, p.srv, StateClosing, func() {
		if err := unix.Shutdown(p.srv, unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		if err := unix.Shutdown(p.cli, unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		waitState(t, p.srv, StateFinWait1, "server")
		waitState(t, p.cli, StateFinWait1, "client")
	}, func(st *State) {
		st.TCPState = StateClosing
		st.InqSeq++ // rcv_nxt counts the FIN
	})
	readEOF(t, fd, "server")
	readEOF(t, p.cli, "client")
	for _, s := range []struct {
		fd  int
		who string
	}{{fd, "server"}, {p.cli, "client"}} {
		deadline := time.Now().Add(timeout)
		for st := tcpState(t, s.fd); st != StateTimeWait && st != StateClose; st = tcpState(t, s.fd) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: state %d, want the close to complete", s.who, st)
			}
			time.Sleep(5 * time.Millisecond)
		}
		noError(t, s.fd, s.who)
	}
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}

// checkpointWith takes a network lock on the server's connection, runs prepare (which may produce a state
// that needs packets held back), dumps the server, lets edit change the dump, closes the server (in
// repair mode: nothing reaches the client) and restores it the way a checkpoint tool should: RestoreInto,
// release the lock, Resume. It returns the restored descriptor.
func checkpointWith(t *testing.T, srv, want int, prepare func(), edit ...func(*State)) int {
	t.Helper()
	l := lock(t, srv)
	prepare()
	st, err := Dump(srv)
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	for _, e := range edit {
		e(st)
	}
	if st.TCPState != want {
		t.Fatalf("dumped state %d, want %d", st.TCPState, want)
	}
	t.Logf("dumped %v", st)
	closeFD(t, srv)
	fd, err := unix.Socket(st.Family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, fd)
	if err := RestoreInto(fd, st); err != nil {
		t.Fatalf("RestoreInto: %v", err)
	}
	if s := tcpState(t, fd); s != want {
		t.Fatalf("restored state %d, want %d", s, want)
	}
	release(t, l)
	if err := Resume(fd, st); err != nil {
		t.Fatalf("Resume: %v", err)
	}
	return fd
}
