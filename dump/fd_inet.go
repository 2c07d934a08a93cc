package dump

import (
	"errors"
	"fmt"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	sk_inet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-inet"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/soccr"
)

// inetKind dumps TCP and UDP sockets (AF_INET, AF_INET6) into CRIU's inet_sk_entry (files.img, .isk):
// family, type, state, addresses, socket/IP/TCP options. Established TCP connections (and half-closed
// ones) additionally go through soccr into tcp-stream-INO.img, with TCPEstablished only; the socket then
// stays in repair mode until the task is killed (no FIN, no RST) or given back (see netDump).
//
// Not dumped: datagrams queued on UDP sockets (lost, as with CRIU), connections still waiting in a
// listener's accept queue and half-open connections (refused), classic BPF filters (refused).
type inetKind struct{}

func init() { registerFdKind(inetKind{}) }

func (inetKind) handles(f *openFile) bool {
	return strings.HasPrefix(f.Fd.Target, "socket:[") && isInetSocket(f.Pid, f.Fd.Num)
}

func (inetKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	n := ft.opts.net
	if n == nil {
		return nil, errors.New("inet socket outside of dump.Run (no network state)")
	}
	c, err := n.getfd(f.Pid, f.Fd.Num)
	if err != nil {
		return nil, err
	}
	kept := false
	defer func() {
		if !kept {
			unix.Close(c)
		}
	}()
	s, err := inspectInet(c)
	if err != nil {
		return nil, err
	}
	switch {
	case s.connected() && !ft.opts.TCPEstablished:
		return nil, refuseConnection(s)
	case s.typ == unix.SOCK_STREAM && (s.state == soccr.StateSynSent || s.state == soccr.StateSynRecv):
		return nil, fmt.Errorf("%v: connections still being set up cannot be dumped: %w", s, ErrUnsupported)
	case s.state == soccr.StateListen && s.acceptQueue > 0:
		return nil, fmt.Errorf("%v has %d connections waiting to be accepted: %w", s, s.acceptQueue, ErrUnsupported)
	}
	e := &sk_inet.InetSkEntry{
		Id:      proto.Uint32(id),
		Ino:     proto.Uint32(uint32(f.Stat.Ino)),
		Family:  proto.Uint32(uint32(s.family)),
		Type:    proto.Uint32(uint32(s.typ)),
		Proto:   proto.Uint32(uint32(s.proto)),
		State:   proto.Uint32(uint32(s.state)),
		SrcPort: proto.Uint32(uint32(s.local.Port())),
		DstPort: proto.Uint32(uint32(s.remote.Port())),
		Flags:   proto.Uint32(f.Flags),
		Backlog: proto.Uint32(s.backlog),
		SrcAddr: addrWords(s.family, s.local.Addr()),
		DstAddr: addrWords(s.family, s.remote.Addr()),
		Fown:    zeroFown(),
		NsId:    nsID(ft.pid, "net"),
	}
	if s.ifname != "" {
		e.Ifname = proto.String(s.ifname)
	}
	// Socket options first: repair mode (below) forces SO_REUSEADDR on.
	if e.Opts, err = sockOpts(c); err != nil {
		return nil, fmt.Errorf("%v: %w", s, err)
	}
	if e.IpOpts, err = ipOpts(c, s.family); err != nil {
		return nil, fmt.Errorf("%v: %w", s, err)
	}
	if s.family == unix.AF_INET6 {
		v, err := unix.GetsockoptInt(c, unix.SOL_IPV6, unix.IPV6_V6ONLY)
		if err != nil {
			return nil, fmt.Errorf("%v: get IPV6_V6ONLY: %w", s, err)
		}
		e.V6Only = proto.Bool(v != 0)
	}
	if s.typ == unix.SOCK_STREAM {
		if e.TcpOpts, err = tcpOpts(c); err != nil {
			return nil, fmt.Errorf("%v: %w", s, err)
		}
	}
	if s.connected() {
		if err := n.add(s); err != nil {
			return nil, err
		}
		st, err := soccr.Dump(c)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", s, err)
		}
		// From here on the socket is in repair mode: netDump takes it over (and takes it out of repair
		// mode if the task is given back).
		n.keep(c, st, s.String())
		kept = true
		e.State = proto.Uint32(uint32(st.TCPState))
		e.TcpOpts = st.TCPOptsImage()
		ino := uint32(f.Stat.Ino)
		ft.addRawImage(func(d *images.Dir) error {
			if err := d.WriteTCPStream(ino, st.ToImage(), st.InQueue, st.OutQueue); err != nil {
				return fmt.Errorf("write %s: %w", images.TCPStreamName(ino), err)
			}
			return nil
		})
	}
	return &fdinfo.FileEntry{Type: fdinfo.FdTypes_INETSK.Enum(), Id: proto.Uint32(id), Isk: e}, nil
}

// finish adds the record of the network lock to the images (or removes a stale one).
func (inetKind) finish(ft *fileTable) error {
	if n := ft.opts.net; n != nil {
		ft.addRawImage(n.writeRecord)
	}
	return nil
}
