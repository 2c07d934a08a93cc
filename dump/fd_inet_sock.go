package dump

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/netlock"
	"github.com/lazyr/lazyr/soccr"
)

// inetSock is what lazyr learns about one TCP or UDP socket of the task through its own copy of it
// (pidfd_getfd gives the same socket, so getsockopt and getsockname read the task's socket).
type inetSock struct {
	family, typ, proto int
	state              int // TCP state from TCP_INFO; for UDP ESTABLISHED when connected, else CLOSE
	local, remote      netip.AddrPort
	ifname             string // interface of an IPv6 scope id, if any
	backlog            uint32 // listening sockets: the listen() backlog
	acceptQueue        uint32 // listening sockets: connections waiting to be accept()ed
}

// inetProtoNames are the names sockfs gives TCP and UDP sockets (the xattr system.sockprotoname, which is
// the socket's protocol name in the kernel). RAW, PING, UDPLITE, MPTCP and other inet sockets are not
// claimed and are refused by name.
var inetProtoNames = map[string]bool{"TCP": true, "TCPv6": true, "UDP": true, "UDPv6": true}

// isInetSocket reports whether fd of pid is a TCP or UDP socket, without touching the socket itself.
func isInetSocket(pid, fd int) bool {
	buf := make([]byte, 32)
	n, err := unix.Getxattr(fmt.Sprintf("/proc/%d/fd/%d", pid, fd), "system.sockprotoname", buf)
	if err != nil || n == 0 {
		return false
	}
	name := string(buf[:n])
	if name[len(name)-1] == 0 {
		name = name[:len(name)-1]
	}
	return inetProtoNames[name]
}

// inspectInet reads the identity and state of a TCP or UDP socket.
func inspectInet(fd int) (*inetSock, error) {
	s := &inetSock{}
	var err error
	if s.family, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil {
		return nil, fmt.Errorf("SO_DOMAIN: %w", err)
	}
	if s.typ, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE); err != nil {
		return nil, fmt.Errorf("SO_TYPE: %w", err)
	}
	if s.proto, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL); err != nil {
		return nil, fmt.Errorf("SO_PROTOCOL: %w", err)
	}
	if s.family != unix.AF_INET && s.family != unix.AF_INET6 {
		return nil, fmt.Errorf("socket family %d: %w", s.family, ErrUnsupported)
	}
	switch {
	case s.typ == unix.SOCK_STREAM && s.proto == unix.IPPROTO_TCP:
		ti, err := unix.GetsockoptTCPInfo(fd, unix.SOL_TCP, unix.TCP_INFO)
		if err != nil {
			return nil, fmt.Errorf("TCP_INFO: %w", err)
		}
		s.state = int(ti.State)
		if s.state == soccr.StateListen {
			// For a listener the kernel reports the accept queue in tcpi_unacked and the backlog in
			// tcpi_sacked (tcp_get_info).
			s.acceptQueue, s.backlog = ti.Unacked, ti.Sacked
		}
	case s.typ == unix.SOCK_DGRAM && s.proto == unix.IPPROTO_UDP:
		s.state = soccr.StateClose
	default:
		return nil, fmt.Errorf("socket type %d protocol %d: %w", s.typ, s.proto, ErrUnsupported)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	if s.local, s.ifname, err = addrPortOf(sa); err != nil {
		return nil, err
	}
	pa, err := unix.Getpeername(fd)
	switch {
	case err == nil:
		if s.remote, _, err = addrPortOf(pa); err != nil {
			return nil, err
		}
		if s.typ == unix.SOCK_DGRAM {
			s.state = soccr.StateEstablished
		}
	case errors.Is(err, unix.ENOTCONN):
	default:
		return nil, fmt.Errorf("getpeername: %w", err)
	}
	return s, nil
}

func addrPortOf(sa unix.Sockaddr) (netip.AddrPort, string, error) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), "", nil
	case *unix.SockaddrInet6:
		ifname := ""
		if a.ZoneId != 0 {
			ifname = strconv.FormatUint(uint64(a.ZoneId), 10)
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				ifname = ifi.Name
			}
		}
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)), ifname, nil
	}
	return netip.AddrPort{}, "", fmt.Errorf("socket address %T: %w", sa, ErrUnsupported)
}

// connected reports whether the socket is a TCP connection that only TCP repair can checkpoint.
func (s *inetSock) connected() bool {
	if s.typ != unix.SOCK_STREAM {
		return false
	}
	switch s.state {
	case soccr.StateEstablished, soccr.StateFinWait1, soccr.StateFinWait2, soccr.StateCloseWait,
		soccr.StateLastAck, soccr.StateClosing:
		return true
	}
	return false
}

func (s *inetSock) conn() netlock.Conn { return netlock.Conn{Local: s.local, Remote: s.remote} }

func (s *inetSock) protoName() string {
	if s.typ == unix.SOCK_STREAM {
		return "TCP"
	}
	return "UDP"
}

// String names the socket the way a user recognises it: "TCP 127.0.0.1:80 -> 127.0.0.1:41234 (ESTABLISHED)".
func (s *inetSock) String() string {
	switch {
	case s.remote.IsValid():
		return fmt.Sprintf("%s connection %v -> %v (%s)", s.protoName(), s.local, s.remote, stateName(s.typ, s.state))
	case s.state == soccr.StateListen:
		return fmt.Sprintf("TCP listener on %v", s.local)
	case s.local.Port() != 0:
		return fmt.Sprintf("%s socket bound to %v", s.protoName(), s.local)
	}
	return fmt.Sprintf("unbound %s socket", s.protoName())
}

var tcpStateNames = map[int]string{
	soccr.StateEstablished: "ESTABLISHED", soccr.StateSynSent: "SYN_SENT", soccr.StateSynRecv: "SYN_RECV",
	soccr.StateFinWait1: "FIN_WAIT1", soccr.StateFinWait2: "FIN_WAIT2", soccr.StateTimeWait: "TIME_WAIT",
	soccr.StateClose: "CLOSE", soccr.StateCloseWait: "CLOSE_WAIT", soccr.StateLastAck: "LAST_ACK",
	soccr.StateListen: "LISTEN", soccr.StateClosing: "CLOSING",
}

func stateName(typ, state int) string {
	if typ == unix.SOCK_DGRAM {
		if state == soccr.StateEstablished {
			return "connected"
		}
		return "unconnected"
	}
	if n, ok := tcpStateNames[state]; ok {
		return n
	}
	return fmt.Sprintf("state %d", state)
}

// addrWords encodes an address the way CRIU's inet_sk_entry holds it: the raw network-order bytes read as
// host-order 32-bit words (CRIU memcpy()s the address into a uint32_t array), one word for AF_INET, four
// for AF_INET6 (an IPv4 address on an AF_INET6 socket in its v4-mapped form); no address is all zeroes.
func addrWords(family int, a netip.Addr) []uint32 {
	b := make([]byte, 16)
	switch {
	case family == unix.AF_INET:
		b = b[:4]
		if a.Unmap().Is4() {
			v := a.Unmap().As4()
			copy(b, v[:])
		}
	case a.IsValid():
		v := a.As16()
		copy(b, v[:])
	}
	w := make([]uint32, len(b)/4)
	for i := range w {
		w[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return w
}
