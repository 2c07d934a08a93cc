package lazypages

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// sendMsg sends one message with fds attached (SCM_RIGHTS).
func sendMsg(sock int, m *message, fds ...int) error {
	if len(fds) != m.wantFds() {
		return fmt.Errorf("%w: %v with %d fds, want %d", errProto, m.Type, len(fds), m.wantFds())
	}
	b, err := encode(m)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	for {
		err = unix.Sendmsg(sock, b, oob, nil, unix.MSG_NOSIGNAL)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("send %v: %w", m.Type, err)
	}
	return nil
}

// recvMsg receives one message and the fds that came with it (CLOEXEC).
// End of stream (the peer closed) is errPeerClosed. Received fds are closed
// on any error, so a malformed message cannot leak them.
func recvMsg(sock int, buf, oob []byte) (*message, []int, error) {
	var n, oobn, flags int
	var err error
	for {
		n, oobn, flags, _, err = unix.Recvmsg(sock, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, nil, err
	}
	fds, ferr := parseFds(oob[:oobn])
	fail := func(err error) (*message, []int, error) {
		closeAll(fds)
		return nil, nil, err
	}
	if ferr != nil {
		return fail(ferr)
	}
	if n == 0 && oobn == 0 {
		return nil, nil, errPeerClosed
	}
	if flags&unix.MSG_TRUNC != 0 {
		return fail(fmt.Errorf("%w: message truncated", errProto))
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return fail(fmt.Errorf("%w: descriptors truncated", errProto))
	}
	m, err := decode(buf[:n])
	if err != nil {
		return fail(err)
	}
	if len(fds) != m.wantFds() {
		return fail(fmt.Errorf("%w: %v came with %d fds, want %d", errProto, m.Type, len(fds), m.wantFds()))
	}
	return m, fds, nil
}

func parseFds(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	cmsgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control message: %w", errProto, err)
	}
	var fds []int
	var bad error
	for i := range cmsgs {
		got, err := unix.ParseUnixRights(&cmsgs[i])
		if err != nil {
			bad = fmt.Errorf("%w: control message: %w", errProto, err)
			continue
		}
		fds = append(fds, got...)
	}
	if bad != nil {
		closeAll(fds)
		return nil, bad
	}
	return fds, nil
}

func closeAll(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// oobSpace is room for the most fds a message carries (two).
func oobSpace() []byte { return make([]byte, unix.CmsgSpace(2*4)) }
