// Package soccr checkpoints and restores established TCP connections with the kernel's TCP repair mode,
// like CRIU's libsoccr, and is usable on its own.
//
// Dump: with the socket in repair mode (setsockopt TCP_REPAIR) the kernel freezes it from the local
// side and exposes its insides: TCP_QUEUE_SEQ gives rcv_nxt and write_seq for the queue selected with
// TCP_REPAIR_QUEUE, recv(MSG_PEEK) copies either queue, SIOCOUTQ/SIOCOUTQNSD split the send queue into
// sent-unacknowledged and never-sent bytes, TCP_INFO and TCP_MAXSEG give the options negotiated at the
// handshake (MSS clamp, window scales, SACK, timestamps), TCP_TIMESTAMP the timestamp clock and
// TCP_REPAIR_WINDOW the window state. Closing a socket in repair mode sends nothing.
//
// Restore: a new socket in repair mode is bound, given the sequence numbers (TCP_QUEUE_SEQ, before
// connect) and connected, which in repair mode sends no SYN and makes it ESTABLISHED at once; then the
// negotiated options (TCP_REPAIR_OPTIONS), the receive queue (sends into it), the window, and the send
// queue: the sent part through repair mode (kept for retransmission, not transmitted), the unsent part
// with repair mode briefly off (transmitted normally). Half-closed connections (FIN_WAIT1/2, CLOSE_WAIT,
// LAST_ACK, CLOSING) get their FINs back the way libsoccr does it: our FIN with shutdown(SHUT_WR), the
// peer's FIN and the peer's acknowledgement of our FIN as segments forged in the peer's name through a
// raw socket, marked with PacketMark so that a network lock lets them through.
//
// Between Dump and Restore the peer must not reach the stack: a segment for a connection with no socket
// (or only a listener on its port) is answered with a reset. A network lock (package netlock) drops the
// connection's packets until the restored socket has left repair mode. The fastest resume is RestoreInto,
// release the lock, Resume: leaving repair mode then sends a window probe that the peer answers at once.
//
// Sockets are created in the network namespace of the calling thread. All calls need CAP_NET_ADMIN.
package soccr
