package pagesrv

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"golang.org/x/sys/unix"
)

// listen opens a non-blocking listening TCP socket on address:port.
// An empty address listens on every IPv4 address, as CRIU's page server
// does; port 0 picks a free port.
func listen(address string, port int) (int, net.Addr, error) {
	if port < 0 || port > 65535 {
		return -1, nil, fmt.Errorf("pagesrv: listen: port %d out of range", port)
	}
	ip := net.IPv4zero
	if address != "" {
		ta, err := net.DefaultResolver.LookupIP(context.Background(), "ip", address)
		if err != nil {
			return -1, nil, fmt.Errorf("pagesrv: listen: resolve %q: %w", address, err)
		}
		ip = ta[0]
		for _, a := range ta {
			if a.To4() != nil {
				ip = a
				break
			}
		}
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip4 := ip.To4(); ip4 != nil {
		s := &unix.SockaddrInet4{Port: port}
		copy(s.Addr[:], ip4)
		sa = s
	} else {
		family = unix.AF_INET6
		s := &unix.SockaddrInet6{Port: port}
		copy(s.Addr[:], ip.To16())
		sa = s
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, nil, fmt.Errorf("pagesrv: listen: socket: %w", err)
	}
	// A restarted page server must be able to rebind while old connections
	// linger in TIME_WAIT.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("pagesrv: listen: SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("pagesrv: listen: bind %s: %w", net.JoinHostPort(ip.String(), strconv.Itoa(port)), err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("pagesrv: listen: %w", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("pagesrv: listen: getsockname: %w", err)
	}
	return fd, sockaddrToTCP(bound), nil
}

func sockaddrToTCP(sa unix.Sockaddr) net.Addr {
	switch s := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), s.Addr[:]...)), Port: s.Port}
	case *unix.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), s.Addr[:]...)), Port: s.Port}
	}
	return &net.TCPAddr{}
}
