package soccr

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"
)

// TCP header flags.
const (
	tcpFIN = 0x01
	tcpACK = 0x10
)

// segment is a TCP segment forged in the peer's name and delivered to the restored socket. A half-closed
// connection cannot be rebuilt from socket calls alone: the FIN the peer sent must arrive as a packet to
// land in the receive queue, and an acknowledgement of our own FIN must arrive to move the socket from
// FIN_WAIT1 to FIN_WAIT2. The socket is in repair mode but still processes incoming segments.
type segment struct {
	src, dst netip.AddrPort // src is the peer, dst the restored socket
	seq, ack uint32
	flags    uint8
	window   uint16
}

// marshal builds the IP packet: IPv4 for IPv4 and v4-mapped addresses, IPv6 otherwise.
func (s segment) marshal() []byte {
	src, dst := s.src.Addr().Unmap(), s.dst.Addr().Unmap()
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], s.src.Port())
	binary.BigEndian.PutUint16(tcp[2:], s.dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], s.seq)
	binary.BigEndian.PutUint32(tcp[8:], s.ack)
	tcp[12] = 5 << 4 // data offset: 5 words, no options
	tcp[13] = s.flags
	binary.BigEndian.PutUint16(tcp[14:], s.window)

	var pkt, pseudo []byte
	if src.Is4() {
		ip := make([]byte, 20)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], 40)
		binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
		ip[8] = 64
		ip[9] = unix.IPPROTO_TCP
		s4, d4 := src.As4(), dst.As4()
		copy(ip[12:], s4[:])
		copy(ip[16:], d4[:])
		binary.BigEndian.PutUint16(ip[10:], checksum(0, ip))
		pseudo = append(append(append([]byte{}, s4[:]...), d4[:]...), 0, unix.IPPROTO_TCP, 0, 20)
		pkt = ip
	} else {
		ip := make([]byte, 40)
		ip[0] = 6 << 4
		binary.BigEndian.PutUint16(ip[4:], 20)
		ip[6] = unix.IPPROTO_TCP
		ip[7] = 64
		s16, d16 := src.As16(), dst.As16()
		copy(ip[8:], s16[:])
		copy(ip[24:], d16[:])
		pseudo = append(append(append([]byte{}, s16[:]...), d16[:]...), 0, 0, 0, 20, 0, 0, 0, unix.IPPROTO_TCP)
		pkt = ip
	}
	binary.BigEndian.PutUint16(tcp[16:], checksum(sum(0, pseudo), tcp))
	return append(pkt, tcp...)
}

// sum adds b to the running one's-complement sum (RFC 1071).
func sum(acc uint32, b []byte) uint32 {
	for len(b) >= 2 {
		acc += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

func checksum(acc uint32, b []byte) uint16 {
	acc = sum(acc, b)
	for acc>>16 != 0 {
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// send injects the segment through a raw socket with the IP header included. The packet's destination is
// a local address, so routing hands it to the local stack over loopback whatever the peer's address is.
// It carries PacketMark so that a network lock can let it through.
func (s segment) send() error {
	dst := s.dst.Addr()
	family := unix.AF_INET6
	var to unix.Sockaddr
	if dst.Unmap().Is4() {
		family = unix.AF_INET
		to = &unix.SockaddrInet4{Addr: dst.Unmap().As4()}
	} else {
		sa := &unix.SockaddrInet6{Addr: dst.As16()}
		if z := dst.Zone(); z != "" {
			idx, err := zoneIndex(z)
			if err != nil {
				return err
			}
			sa.ZoneId = idx
		}
		to = sa
	}
	// IPPROTO_RAW implies IP_HDRINCL, and on AF_INET6 IPV6_HDRINCL (Linux 4.5+): the packet is sent as built.
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return fmt.Errorf("soccr: raw socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, PacketMark); err != nil {
		return fmt.Errorf("soccr: SO_MARK on raw socket: %w", err)
	}
	if err := unix.Sendto(fd, s.marshal(), 0, to); err != nil {
		return fmt.Errorf("soccr: send forged segment %v->%v: %w", s.src, s.dst, err)
	}
	return nil
}
