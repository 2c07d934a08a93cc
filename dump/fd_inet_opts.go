package dump

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	sk_opts "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-opts"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// sockOpts reads the socket-level options CRIU's sk_opts_entry holds. It must run before the socket is
// put in repair mode, which forces SO_REUSEADDR on.
func sockOpts(fd int) (*sk_opts.SkOptsEntry, error) {
	geti := func(opt int, name string) (int, error) {
		v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return 0, fmt.Errorf("get %s: %w", name, err)
		}
		return v, nil
	}
	o := &sk_opts.SkOptsEntry{}
	ints := []struct {
		opt  int
		name string
		set  func(v int)
	}{
		{unix.SO_SNDBUF, "SO_SNDBUF", func(v int) { o.SoSndbuf = proto.Uint32(uint32(v)) }},
		{unix.SO_RCVBUF, "SO_RCVBUF", func(v int) { o.SoRcvbuf = proto.Uint32(uint32(v)) }},
		{unix.SO_REUSEADDR, "SO_REUSEADDR", func(v int) { o.Reuseaddr = proto.Bool(v != 0) }},
		{unix.SO_REUSEPORT, "SO_REUSEPORT", func(v int) { o.SoReuseport = proto.Bool(v != 0) }},
		{unix.SO_KEEPALIVE, "SO_KEEPALIVE", func(v int) { o.SoKeepalive = proto.Bool(v != 0) }},
		{unix.SO_BROADCAST, "SO_BROADCAST", func(v int) { o.SoBroadcast = proto.Bool(v != 0) }},
		{unix.SO_PRIORITY, "SO_PRIORITY", func(v int) { o.SoPriority = proto.Uint32(uint32(v)) }},
		{unix.SO_RCVLOWAT, "SO_RCVLOWAT", func(v int) { o.SoRcvlowat = proto.Uint32(uint32(v)) }},
		{unix.SO_MARK, "SO_MARK", func(v int) { o.SoMark = proto.Uint32(uint32(v)) }},
		{unix.SO_PASSCRED, "SO_PASSCRED", func(v int) { o.SoPasscred = proto.Bool(v != 0) }},
		{unix.SO_DONTROUTE, "SO_DONTROUTE", func(v int) { o.SoDontroute = proto.Bool(v != 0) }},
		{unix.SO_NO_CHECK, "SO_NO_CHECK", func(v int) { o.SoNoCheck = proto.Bool(v != 0) }},
		{unix.SO_OOBINLINE, "SO_OOBINLINE", func(v int) { o.SoOobinline = proto.Uint32(uint32(v)) }},
	}
	for _, i := range ints {
		v, err := geti(i.opt, i.name)
		// Options a kernel or a protocol does not have (SO_PASSCRED is for unix and netlink sockets
		// only since Linux 6.5) stay unset in the image.
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOPROTOOPT) {
			continue
		}
		if err != nil {
			return nil, err
		}
		i.set(v)
	}
	// SO_BUF_LOCK (Linux 5.14) tells sizes the application set (to restore) from autotuned ones.
	if v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK); err == nil {
		o.SoBufLock = proto.Uint32(uint32(v))
	} else if !errors.Is(err, unix.ENOPROTOOPT) {
		return nil, fmt.Errorf("get SO_BUF_LOCK: %w", err)
	}
	for _, tmo := range []struct {
		opt      int
		name     string
		sec, use **uint64
	}{
		{unix.SO_SNDTIMEO, "SO_SNDTIMEO", &o.SoSndTmoSec, &o.SoSndTmoUsec},
		{unix.SO_RCVTIMEO, "SO_RCVTIMEO", &o.SoRcvTmoSec, &o.SoRcvTmoUsec},
	} {
		tv, err := unix.GetsockoptTimeval(fd, unix.SOL_SOCKET, tmo.opt)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", tmo.name, err)
		}
		*tmo.sec, *tmo.use = proto.Uint64(uint64(tv.Sec)), proto.Uint64(uint64(tv.Usec))
	}
	l, err := unix.GetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER)
	if err != nil {
		return nil, fmt.Errorf("get SO_LINGER: %w", err)
	}
	if l.Onoff != 0 {
		o.SoLinger = proto.Uint32(uint32(l.Linger))
	}
	dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	if err != nil {
		return nil, fmt.Errorf("get SO_BINDTODEVICE: %w", err)
	}
	if dev = strings.TrimRight(dev, "\x00"); dev != "" {
		o.SoBoundDev = proto.String(dev)
	}
	// A classic BPF filter (SO_ATTACH_FILTER) would have to be read back and reattached; its length is
	// what SO_GET_FILTER reports for an empty buffer. eBPF filters cannot be read back at all.
	n, err := socketFilterLen(fd)
	if err != nil {
		return nil, fmt.Errorf("get SO_GET_FILTER: %w", err)
	}
	if n > 0 {
		return nil, fmt.Errorf("socket has a BPF filter attached (%d instructions): %w", n, ErrUnsupported)
	}
	return o, nil
}

// ipOpts reads the IP-level options of CRIU's ip_opts_entry. TTL and TOS are kept only when they differ
// from what a new socket gets, so that a restore does not pin today's system defaults.
func ipOpts(fd, family int) (*sk_inet.IpOptsEntry, error) {
	type opt struct {
		level, opt int
		name       string
	}
	freebind, pktinfo, tos, ttl := opt{unix.SOL_IP, unix.IP_FREEBIND, "IP_FREEBIND"},
		opt{unix.SOL_IP, unix.IP_PKTINFO, "IP_PKTINFO"}, opt{unix.SOL_IP, unix.IP_TOS, "IP_TOS"},
		opt{unix.SOL_IP, unix.IP_TTL, "IP_TTL"}
	if family == unix.AF_INET6 {
		freebind, pktinfo, tos, ttl = opt{unix.SOL_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"},
			opt{unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, "IPV6_RECVPKTINFO"},
			opt{unix.SOL_IPV6, unix.IPV6_TCLASS, "IPV6_TCLASS"},
			opt{unix.SOL_IPV6, unix.IPV6_UNICAST_HOPS, "IPV6_UNICAST_HOPS"}
	}
	get := func(o opt) (int, error) {
		v, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil {
			return 0, fmt.Errorf("get %s: %w", o.name, err)
		}
		return v, nil
	}
	e := &sk_inet.IpOptsEntry{}
	v, err := get(freebind)
	if err != nil {
		return nil, err
	}
	e.Freebind = proto.Bool(v != 0)
	if v, err = get(pktinfo); err != nil {
		return nil, err
	}
	e.Pktinfo = proto.Bool(v != 0)
	if v, err = get(tos); err != nil {
		return nil, err
	}
	if v != 0 {
		e.Tos = proto.Uint32(uint32(v))
	}
	if v, err = get(ttl); err != nil {
		return nil, err
	}
	if v != defaultTTL(family) {
		e.Ttl = proto.Uint32(uint32(v))
	}
	return e, nil
}

// defaultTTL is the hop limit a socket without IP_TTL/IPV6_UNICAST_HOPS uses in lazyr's network namespace.
func defaultTTL(family int) int {
	path := "/proc/sys/net/ipv4/ip_default_ttl"
	if family == unix.AF_INET6 {
		path = "/proc/sys/net/ipv6/conf/default/hop_limit"
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 64
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 64
	}
	return v
}

// tcpOpts reads the TCP options of CRIU's tcp_opts_entry (for sockets that soccr does not dump).
func tcpOpts(fd int) (*tcp_stream.TcpOptsEntry, error) {
	e := &tcp_stream.TcpOptsEntry{}
	for _, o := range []struct {
		opt  int
		name string
		set  func(v int)
	}{
		{unix.TCP_NODELAY, "TCP_NODELAY", func(v int) { e.Nodelay = proto.Bool(v != 0) }},
		{unix.TCP_CORK, "TCP_CORK", func(v int) { e.Cork = proto.Bool(v != 0) }},
		{unix.TCP_KEEPCNT, "TCP_KEEPCNT", func(v int) { e.Keepcnt = proto.Uint32(uint32(v)) }},
		{unix.TCP_KEEPIDLE, "TCP_KEEPIDLE", func(v int) { e.Keepidle = proto.Uint32(uint32(v)) }},
		{unix.TCP_KEEPINTVL, "TCP_KEEPINTVL", func(v int) { e.Keepintvl = proto.Uint32(uint32(v)) }},
	} {
		v, err := unix.GetsockoptInt(fd, unix.SOL_TCP, o.opt)
		if err != nil {
			return nil, fmt.Errorf("get %s: %w", o.name, err)
		}
		o.set(v)
	}
	return e, nil
}
