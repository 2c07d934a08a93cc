package soccr

import (
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"
)

// An AF_INET6 socket talking IPv4 (v4-mapped addresses, as accepted by a dual-stack listener) is
// restored as an AF_INET6 socket; its forged FIN goes out as IPv4. Tested in CLOSE_WAIT, which needs the
// forged FIN.
func TestRestoreV4Mapped(t *testing.T) {
	enterNetns(t)
	lis, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, lis)
	setInt(t, lis, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0)
	if err := unix.Bind(lis, &unix.SockaddrInet6{}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lis, 1); err != nil {
		t.Fatal(err)
	}
	cli, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	track(t, cli)
	if err := unix.Connect(cli, &unix.SockaddrInet4{Addr: lo4.As4(), Port: int(localAddrPort(t, lis).Port())}); err != nil {
		t.Fatal(err)
	}
	srv, _, err := unix.Accept4(lis, unix.SOCK_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	track(t, srv)

	c2s, s2c := &stream{name: "client->server"}, &stream{name: "server->client"}
	r0 := resets(t)
	c2s.write(t, cli, 1500)
	if err := unix.Shutdown(cli, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	waitState(t, srv, StateCloseWait, "server")
	fd := checkpointWith(t, srv, StateCloseWait, func() {}, func(st *State) {
		if st.Family != unix.AF_INET6 || !st.Src.Addr().Is4In6() || st.Src.Addr().Unmap() != lo4 {
			t.Fatalf("dumped family %d src %v: want AF_INET6 with a v4-mapped address", st.Family, st.Src)
		}
	})
	if got := localAddrPort(t, fd); got.Addr() != netip.AddrFrom16(lo4.As16()) {
		t.Errorf("restored local address %v", got)
	}
	c2s.read(t, fd, 1500)
	readEOF(t, fd, "server")
	s2c.write(t, fd, 800)
	s2c.read(t, cli, 800)
	noError(t, cli, "client")
	if d := resets(t) - r0; d != 0 {
		t.Errorf("%d resets", d)
	}
}
