package restore

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Socket options are applied in two steps: those that decide how the socket binds or routes before
// bind/connect/listen (preBind), the others afterwards (postBind). For a connection rebuilt by soccr,
// soccr restores the buffers, keepalive, TCP options and SO_REUSEADDR itself, and postBind leaves them.

type sockOpt struct {
	level, opt int
	val        int
	name       string
}

func setOpts(fd int, opts []sockOpt) error {
	for _, o := range opts {
		if err := unix.SetsockoptInt(fd, o.level, o.opt, o.val); err != nil {
			return fmt.Errorf("set %s %d: %w", o.name, o.val, err)
		}
	}
	return nil
}

func b2i(v bool) int {
	if v {
		return 1
	}
	return 0
}

func (s *inetSock) preBind(fd int) error {
	o, ip := s.entry.GetOpts(), s.entry.GetIpOpts()
	opts := []sockOpt{{unix.SOL_SOCKET, unix.SO_REUSEPORT, b2i(o.GetSoReuseport()), "SO_REUSEPORT"}}
	// Needs CAP_NET_ADMIN: set only when the application had set it.
	if o.GetSoMark() != 0 {
		opts = append(opts, sockOpt{unix.SOL_SOCKET, unix.SO_MARK, int(o.GetSoMark()), "SO_MARK"})
	}
	if s.family == unix.AF_INET6 {
		opts = append(opts,
			sockOpt{unix.SOL_IPV6, unix.IPV6_V6ONLY, b2i(s.entry.GetV6Only()), "IPV6_V6ONLY"},
			sockOpt{unix.SOL_IPV6, unix.IPV6_FREEBIND, b2i(ip.GetFreebind()), "IPV6_FREEBIND"})
	} else {
		opts = append(opts, sockOpt{unix.SOL_IP, unix.IP_FREEBIND, b2i(ip.GetFreebind()), "IP_FREEBIND"})
	}
	if err := setOpts(fd, opts); err != nil {
		return err
	}
	if dev := o.GetSoBoundDev(); dev != "" {
		if err := unix.BindToDevice(fd, dev); err != nil {
			return fmt.Errorf("set SO_BINDTODEVICE %q: %w", dev, err)
		}
	}
	return nil
}

func (s *inetSock) postBind(fd int, repaired bool) error {
	o, ip, tcp := s.entry.GetOpts(), s.entry.GetIpOpts(), s.entry.GetTcpOpts()
	opts := []sockOpt{
		{unix.SOL_SOCKET, unix.SO_BROADCAST, b2i(o.GetSoBroadcast()), "SO_BROADCAST"},
		{unix.SOL_SOCKET, unix.SO_DONTROUTE, b2i(o.GetSoDontroute()), "SO_DONTROUTE"},
		{unix.SOL_SOCKET, unix.SO_NO_CHECK, b2i(o.GetSoNoCheck()), "SO_NO_CHECK"},
		{unix.SOL_SOCKET, unix.SO_OOBINLINE, int(o.GetSoOobinline()), "SO_OOBINLINE"},
	}
	if o.GetSoPasscred() {
		opts = append(opts, sockOpt{unix.SOL_SOCKET, unix.SO_PASSCRED, 1, "SO_PASSCRED"})
	}
	if o.SoRcvlowat != nil && o.GetSoRcvlowat() > 0 {
		opts = append(opts, sockOpt{unix.SOL_SOCKET, unix.SO_RCVLOWAT, int(o.GetSoRcvlowat()), "SO_RCVLOWAT"})
	}
	if s.family == unix.AF_INET6 {
		opts = append(opts, sockOpt{unix.SOL_IPV6, unix.IPV6_RECVPKTINFO, b2i(ip.GetPktinfo()), "IPV6_RECVPKTINFO"})
		if ip.Tos != nil {
			opts = append(opts, sockOpt{unix.SOL_IPV6, unix.IPV6_TCLASS, int(ip.GetTos()), "IPV6_TCLASS"})
		}
		if ip.Ttl != nil {
			opts = append(opts, sockOpt{unix.SOL_IPV6, unix.IPV6_UNICAST_HOPS, int(ip.GetTtl()), "IPV6_UNICAST_HOPS"})
		}
	} else {
		opts = append(opts, sockOpt{unix.SOL_IP, unix.IP_PKTINFO, b2i(ip.GetPktinfo()), "IP_PKTINFO"})
		if ip.Tos != nil {
			opts = append(opts, sockOpt{unix.SOL_IP, unix.IP_TOS, int(ip.GetTos()), "IP_TOS"})
		}
		if ip.Ttl != nil {
			opts = append(opts, sockOpt{unix.SOL_IP, unix.IP_TTL, int(ip.GetTtl()), "IP_TTL"})
		}
	}
	// After IP_TOS, which sets the priority from the TOS bits: the dumped priority is the final word.
	// Values above 6 need CAP_NET_ADMIN: set only when the application had set one.
	if o.GetSoPriority() != 0 {
		opts = append(opts, sockOpt{unix.SOL_SOCKET, unix.SO_PRIORITY, int(o.GetSoPriority()), "SO_PRIORITY"})
	}
	if !repaired {
		opts = append(opts,
			sockOpt{unix.SOL_SOCKET, unix.SO_REUSEADDR, b2i(o.GetReuseaddr()), "SO_REUSEADDR"},
			sockOpt{unix.SOL_SOCKET, unix.SO_KEEPALIVE, b2i(o.GetSoKeepalive()), "SO_KEEPALIVE"})
		if s.typ == unix.SOCK_STREAM {
			opts = append(opts,
				sockOpt{unix.SOL_TCP, unix.TCP_NODELAY, b2i(tcp.GetNodelay()), "TCP_NODELAY"},
				sockOpt{unix.SOL_TCP, unix.TCP_CORK, b2i(tcp.GetCork()), "TCP_CORK"})
			for _, k := range []struct {
				v    *uint32
				opt  int
				name string
			}{
				{tcp.Keepcnt, unix.TCP_KEEPCNT, "TCP_KEEPCNT"},
				{tcp.Keepidle, unix.TCP_KEEPIDLE, "TCP_KEEPIDLE"},
				{tcp.Keepintvl, unix.TCP_KEEPINTVL, "TCP_KEEPINTVL"},
			} {
				if k.v != nil && *k.v > 0 {
					opts = append(opts, sockOpt{unix.SOL_TCP, k.opt, int(*k.v), k.name})
				}
			}
		}
	}
	if err := setOpts(fd, opts); err != nil {
		return err
	}
	for _, tmo := range []struct {
		opt      int
		sec, use uint64
		name     string
	}{
		{unix.SO_SNDTIMEO, o.GetSoSndTmoSec(), o.GetSoSndTmoUsec(), "SO_SNDTIMEO"},
		{unix.SO_RCVTIMEO, o.GetSoRcvTmoSec(), o.GetSoRcvTmoUsec(), "SO_RCVTIMEO"},
	} {
		if tmo.sec == 0 && tmo.use == 0 {
			continue
		}
		if tmo.sec > 1<<40 || tmo.use >= 1000000 {
			return fmt.Errorf("%w: %s %d.%06d", ErrBadImages, tmo.name, tmo.sec, tmo.use)
		}
		tv := unix.Timeval{Sec: int64(tmo.sec), Usec: int64(tmo.use)}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, tmo.opt, &tv); err != nil {
			return fmt.Errorf("set %s: %w", tmo.name, err)
		}
	}
	if o.SoLinger != nil {
		l := unix.Linger{Onoff: 1, Linger: int32(o.GetSoLinger())}
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &l); err != nil {
			return fmt.Errorf("set SO_LINGER: %w", err)
		}
	}
	if !repaired {
		return s.buffers(fd)
	}
	return nil
}

// buffers restores the buffer sizes the application set. With SO_BUF_LOCK in the image only the locked
// sizes are set (the others are still autotuned); without it both are set, as CRIU does. The kernel
// doubles what it is given, and the image holds the doubled value; the FORCE variants ignore
// net.core.[rw]mem_max, which the dumped size may exceed on another host.
func (s *inetSock) buffers(fd int) error {
	o := s.entry.GetOpts()
	lock := uint32(3)
	if o.SoBufLock != nil {
		lock = o.GetSoBufLock()
	}
	set := func(force, plain int, v uint32, name string) error {
		if v == 0 {
			return nil
		}
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, int(v/2))
		if errors.Is(err, unix.EPERM) {
			err = unix.SetsockoptInt(fd, unix.SOL_SOCKET, plain, int(v/2))
		}
		if err != nil {
			return fmt.Errorf("set %s %d: %w", name, v, err)
		}
		return nil
	}
	if lock&1 != 0 {
		if err := set(unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, o.GetSoSndbuf(), "SO_SNDBUF"); err != nil {
			return err
		}
	}
	if lock&2 != 0 {
		if err := set(unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, o.GetSoRcvbuf(), "SO_RCVBUF"); err != nil {
			return err
		}
	}
	if o.SoBufLock != nil {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BUF_LOCK, int(lock&3))
		if err != nil && !errors.Is(err, unix.ENOPROTOOPT) {
			return fmt.Errorf("set SO_BUF_LOCK: %w", err)
		}
	}
	return nil
}
