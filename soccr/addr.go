package soccr

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// addrPortOf converts a socket address; an IPv6 scope id becomes the zone, named after the interface when
// the name can be found (names survive a migration between hosts, indexes do not).
func addrPortOf(sa unix.Sockaddr) (netip.AddrPort, error) {
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)), nil
	case *unix.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			zone := strconv.FormatUint(uint64(a.ZoneId), 10)
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				zone = ifi.Name
			}
			ip = ip.WithZone(zone)
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)), nil
	}
	return netip.AddrPort{}, fmt.Errorf("soccr: unexpected socket address %T: %w", sa, unix.EAFNOSUPPORT)
}

// sockaddrOf builds the address to bind or connect a socket of the given family to. An AF_INET6 socket
// takes IPv4 addresses in their v4-mapped form.
func sockaddrOf(family int, ap netip.AddrPort) (unix.Sockaddr, error) {
	ip := ap.Addr()
	switch family {
	case unix.AF_INET:
		if !ip.Unmap().Is4() {
			return nil, fmt.Errorf("soccr: %v on an AF_INET socket: %w", ap, unix.EAFNOSUPPORT)
		}
		return &unix.SockaddrInet4{Addr: ip.Unmap().As4(), Port: int(ap.Port())}, nil
	case unix.AF_INET6:
		sa := &unix.SockaddrInet6{Addr: ip.As16(), Port: int(ap.Port())}
		if z := ip.Zone(); z != "" {
			idx, err := zoneIndex(z)
			if err != nil {
				return nil, err
			}
			sa.ZoneId = idx
		}
		return sa, nil
	}
	return nil, fmt.Errorf("soccr: socket family %d: %w", family, unix.EAFNOSUPPORT)
}

func zoneIndex(zone string) (uint32, error) {
	if n, err := strconv.ParseUint(zone, 10, 32); err == nil {
		return uint32(n), nil
	}
	ifi, err := net.InterfaceByName(zone)
	if err != nil {
		return 0, fmt.Errorf("soccr: IPv6 zone %q: %w", zone, err)
	}
	return uint32(ifi.Index), nil
}

// familyOf is the socket family a State restores into when the State does not say.
func familyOf(st *State) int {
	if st.Family != 0 {
		return st.Family
	}
	if st.Src.Addr().Is4() {
		return unix.AF_INET
	}
	return unix.AF_INET6
}
