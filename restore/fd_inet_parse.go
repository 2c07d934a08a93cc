package restore

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/soccr"
)

// inetSock is a checked inet_sk_entry: what the restore of one TCP or UDP socket relies on.
type inetSock struct {
	family, typ, proto int
	state              int
	local, remote      netip.AddrPort // remote is the zero AddrPort for an unconnected socket
	ino                uint32
	flags              uint32
	backlog            int
	entry              *sk_inet.InetSkEntry // options are applied from here
}

// connected reports whether the socket is a TCP connection rebuilt with TCP repair.
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

func (s *inetSock) String() string {
	proto := "UDP"
	if s.typ == unix.SOCK_STREAM {
		proto = "TCP"
	}
	switch {
	case s.remote.IsValid():
		return fmt.Sprintf("%s connection %v -> %v", proto, s.local, s.remote)
	case s.typ == unix.SOCK_STREAM && s.state == soccr.StateListen:
		return fmt.Sprintf("TCP listener on %v", s.local)
	case s.local.Port() != 0:
		return fmt.Sprintf("%s socket bound to %v", proto, s.local)
	}
	return "unbound " + proto + " socket"
}

// maxBacklog bounds the listen() backlog taken from an image (the kernel clamps it to somaxconn anyway).
const maxBacklog = 1 << 20

// parseInet checks an inet socket entry of the images (untrusted input): known family, type, protocol and
// state, addresses of the family's size, a peer exactly when the state has one.
func parseInet(e *sk_inet.InetSkEntry) (*inetSock, error) {
	if e == nil {
		return nil, fmt.Errorf("%w: file entry of type INETSK without its inet socket entry", ErrBadImages)
	}
	s := &inetSock{
		family: int(e.GetFamily()), typ: int(e.GetType()), proto: int(e.GetProto()), state: int(e.GetState()),
		ino: e.GetIno(), flags: e.GetFlags(), entry: e,
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: inet socket %d: %s", ErrBadImages, s.ino, fmt.Sprintf(format, args...))
	}
	if s.family != unix.AF_INET && s.family != unix.AF_INET6 {
		return nil, bad("family %d", e.GetFamily())
	}
	switch {
	case s.typ == unix.SOCK_STREAM && (s.proto == unix.IPPROTO_TCP || s.proto == 0):
		s.proto = unix.IPPROTO_TCP
		if !s.connected() && s.state != soccr.StateListen && s.state != soccr.StateClose {
			return nil, bad("TCP state %d cannot be restored", s.state)
		}
	case s.typ == unix.SOCK_DGRAM && (s.proto == unix.IPPROTO_UDP || s.proto == 0):
		s.proto = unix.IPPROTO_UDP
		if s.state != soccr.StateEstablished && s.state != soccr.StateClose {
			return nil, bad("UDP state %d", s.state)
		}
	default:
		return nil, fmt.Errorf("inet socket %d of type %d, protocol %d: %w", s.ino, e.GetType(), e.GetProto(), ErrUnsupported)
	}
	if e.GetSrcPort() > 0xffff || e.GetDstPort() > 0xffff {
		return nil, bad("port %d or %d out of range", e.GetSrcPort(), e.GetDstPort())
	}
	if e.GetBacklog() > maxBacklog {
		return nil, bad("backlog %d", e.GetBacklog())
	}
	s.backlog = int(e.GetBacklog())
	src, err := addrOfWords(s.family, e.GetSrcAddr())
	if err != nil {
		return nil, bad("source address: %v", err)
	}
	if s.family == unix.AF_INET6 && e.GetIfname() != "" && src.Is6() && !src.Is4In6() {
		src = src.WithZone(e.GetIfname())
	}
	s.local = netip.AddrPortFrom(src, uint16(e.GetSrcPort()))
	hasPeer := s.connected() || (s.typ == unix.SOCK_DGRAM && s.state == soccr.StateEstablished)
	if hasPeer {
		dst, err := addrOfWords(s.family, e.GetDstAddr())
		if err != nil {
			return nil, bad("destination address: %v", err)
		}
		if e.GetDstPort() == 0 {
			return nil, bad("connected socket without a peer port")
		}
		if src.Unmap().Is4() != dst.Unmap().Is4() {
			return nil, bad("mixed address families %v -> %v", src, dst)
		}
		s.remote = netip.AddrPortFrom(dst, uint16(e.GetDstPort()))
	}
	if s.connected() && s.local.Port() == 0 {
		return nil, bad("TCP connection without a local port")
	}
	if e.GetOpts() == nil {
		return nil, bad("no socket options")
	}
	return s, nil
}

// addrOfWords decodes CRIU's address words (the raw network-order bytes as host-order uint32s): one word
// for AF_INET, four for AF_INET6; no word at all is the unspecified address.
func addrOfWords(family int, w []uint32) (netip.Addr, error) {
	n := 1
	if family == unix.AF_INET6 {
		n = 4
	}
	switch len(w) {
	case 0:
		if family == unix.AF_INET {
			return netip.IPv4Unspecified(), nil
		}
		return netip.IPv6Unspecified(), nil
	case n:
	default:
		return netip.Addr{}, fmt.Errorf("%d words, want %d", len(w), n)
	}
	b := make([]byte, 4*n)
	for i, v := range w {
		binary.NativeEndian.PutUint32(b[4*i:], v)
	}
	a, _ := netip.AddrFromSlice(b)
	return a, nil
}

// zoneIndex turns the interface an IPv6 link-local address is scoped to (a name, or a number in images
// of other tools) into its index on this host.
func zoneIndex(zone string) (uint32, error) {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("IPv6 scope %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}
