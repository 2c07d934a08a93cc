// Package netlock holds off the network traffic of chosen TCP connections while they are checkpointed
// and restored, so that neither side sees a reset: packets are dropped, the peers retransmit, and once
// the lock is released the retransmissions reach the restored socket.
//
// Mechanism: one BPF program per direction (built in Go with the asm package, no clang) is attached with
// tcx (Linux 6.6+) at ingress and egress of every chosen interface, lo included. It reads the IPv4 or
// IPv6 and TCP headers relative to the network header, so it works on interfaces with or without a link
// layer header, and drops a packet when its (source, destination, source port, destination port) is in a
// hash map or its local port is in a second map. Both directions of a connection are entered in the map.
// Packets carrying a configured skb mark always pass: soccr forges segments with such a mark while it
// rebuilds half-closed connections behind the lock. Dropping at tc, below the TCP stack, matters: a packet
// that reached the stack while no socket owned the connection would be answered with a reset.
//
// A Lock owns its maps, programs and links through file descriptors, so by default it disappears with
// the process that made it; Release detaches and closes everything and is idempotent. A lock that must
// outlive its process (lazyr's dump holds it until a later restore) is pinned with Pin into a directory
// of a BPF filesystem (MountBPFFS mounts one if needed): its maps and tcx links become files there, Close
// lets go of the descriptors, and LoadPinned in another process gets the lock back; Release of a pinned
// lock removes the pins, which detaches the programs. Detaching costs tens of milliseconds (the kernel
// patches static keys and waits for RCU); Clear opens the lock at once by emptying its maps, so a caller
// can let the traffic through first and release the programs later.
//
// The lock acts in the network namespace of the thread that called New. Interfaces that appear after New
// are not covered.
package netlock
