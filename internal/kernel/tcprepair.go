package kernel

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// tcpSendQueue selects the send queue for TCP_REPAIR_QUEUE (linux/tcp.h).
const tcpSendQueue = 2

// ProbeTCPRepair connects two sockets over loopback, puts the connected one
// into TCP_REPAIR mode (needs CAP_NET_ADMIN), reads its send-queue sequence
// and repair window the way soccr dumps a connection, and leaves repair mode
// before closing so no RST or FIN surprises anyone.
func ProbeTCPRepair() error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tcp_repair: socket: %w", err)
	}
	defer unix.Close(ln)
	lo := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	if err := unix.Bind(ln, lo); err != nil {
		return fmt.Errorf("tcp_repair: bind 127.0.0.1: %w", err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		return fmt.Errorf("tcp_repair: listen: %w", err)
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return fmt.Errorf("tcp_repair: getsockname: %w", err)
	}
	c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("tcp_repair: socket: %w", err)
	}
	defer unix.Close(c)
	// Over loopback the handshake completes inside connect.
	if err := unix.Connect(c, sa); err != nil {
		return fmt.Errorf("tcp_repair: connect to %v: %w", sa, err)
	}
	a, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		return fmt.Errorf("tcp_repair: accept: %w", err)
	}
	defer unix.Close(a)

	if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, 1); err != nil {
		return missing("tcp_repair: TCP_REPAIR on a connected socket (needs CAP_NET_ADMIN)", err)
	}
	defer unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR, 0)
	if err := unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_REPAIR_QUEUE, tcpSendQueue); err != nil {
		return missing("tcp_repair: TCP_REPAIR_QUEUE", err)
	}
	if _, err := unix.GetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_QUEUE_SEQ); err != nil {
		return missing("tcp_repair: TCP_QUEUE_SEQ", err)
	}
	if err := tcpRepairWindow(c); err != nil {
		return err
	}
	return nil
}
