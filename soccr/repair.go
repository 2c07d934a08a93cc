package soccr

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Repair puts the socket into repair mode (needs CAP_NET_ADMIN in the socket's network namespace). From
// then on the connection is frozen as far as the local side is concerned: sends and receives go to the
// repair queues instead of the wire, and close() tears the socket down without sending FIN or RST.
// Packets from the peer are still processed; a network lock keeps them away while the state is saved.
//
// Kernel quirk: repair mode forces SO_REUSEADDR (sk_reuse = SK_FORCE_REUSE, so that a restored socket can
// bind next to a listener on the same port) and leaving it resets SO_REUSEADDR to off; Resume puts the
// dumped value back.
func Repair(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_ON); err != nil {
		return fmt.Errorf("soccr: TCP_REPAIR on: %w", err)
	}
	return nil
}

// Unrepair takes the socket out of repair mode. The kernel then sends a window probe (an ACK for
// snd_una-1) so that the peer answers with its current window and acknowledgements, which restarts a
// connection whose packets were dropped meanwhile.
func Unrepair(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR, unix.TCP_REPAIR_OFF); err != nil {
		return fmt.Errorf("soccr: TCP_REPAIR off: %w", err)
	}
	return nil
}

// Resume takes a dumped or restored socket out of repair mode and back to work:
//
//   - leaving repair mode sends a window probe in ESTABLISHED, so the peer answers at once with its
//     window and acknowledgements;
//   - SO_REUSEADDR gets back the value st recorded (repair mode forced it, leaving resets it);
//   - data queued but not yet sent is pushed out now (TCP_NODELAY set and put back, which the kernel
//     answers with an explicit push), instead of waiting for the next timer: on a restored socket that
//     timer is a 3 s RTO, and the first attempt may have been dropped by the network lock. Skipped for a
//     corked socket, whose application chose when to send.
//
// st may be nil (then only repair mode is left). Preconditions: the network lock, if any, is released,
// or the probe and the push are lost.
func Resume(fd int, st *State) error {
	if err := Unrepair(fd); err != nil {
		return err
	}
	if st == nil {
		return nil
	}
	if st.ReuseAddr {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return fmt.Errorf("soccr: restore SO_REUSEADDR: %w", err)
		}
	}
	if !st.Cork {
		if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_NODELAY, 1); err != nil {
			return fmt.Errorf("soccr: push pending data (TCP_NODELAY): %w", err)
		}
		if !st.Nodelay {
			if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_NODELAY, 0); err != nil {
				return fmt.Errorf("soccr: restore TCP_NODELAY: %w", err)
			}
		}
	}
	return nil
}

// InRepair reports whether the socket is in repair mode.
func InRepair(fd int) (bool, error) {
	v, err := unix.GetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR)
	if err != nil {
		return false, fmt.Errorf("soccr: get TCP_REPAIR: %w", err)
	}
	return v != 0, nil
}

func setRepairQueue(fd, q int) error {
	if err := unix.SetsockoptInt(fd, unix.SOL_TCP, unix.TCP_REPAIR_QUEUE, q); err != nil {
		return fmt.Errorf("soccr: TCP_REPAIR_QUEUE %d: %w", q, err)
	}
	return nil
}
