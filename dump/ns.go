package dump

import (
	"bytes"
	"fmt"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/compel"
)

// requireRootNamespace refuses a tree whose live processes are not all in the root's namespace of the
// given kind ("ipc", "uts"; label names it in the message): restore recreates one namespace, the root's.
// It returns the root's namespace id.
func requireRootNamespace(procs []*proc, kind, label string) (uint32, error) {
	root := procs[0]
	rootNS := nsID(root.pid, kind)
	if rootNS == nil {
		return 0, fmt.Errorf("process %d: no %s namespace in /proc/%d/ns", root.pid, label, root.pid)
	}
	for _, p := range procs[1:] {
		if p.zombie {
			continue // a zombie has no namespaces left
		}
		if ns := nsID(p.pid, kind); ns == nil || *ns != *rootNS {
			return 0, fmt.Errorf("process %d is in another %s namespace than the root %d (a tree spread over %s namespaces is not supported): %w",
				p.pid, label, root.pid, label, ErrUnsupported)
		}
	}
	return *rootNS, nil
}

// dumpUTS reads the host and domain name of the tree's own UTS namespace through an injected uname().
// Preconditions: called from Tracer.Do; t has a gadget and a scratch area.
func dumpUTS(t *compel.Task) (*utsns.UtsnsEntry, error) {
	addr, _ := t.Scratch()
	if _, err := t.Syscall(unix.SYS_UNAME, addr); err != nil {
		return nil, fmt.Errorf("uname: %w", err)
	}
	const field = 65 // struct utsname: sysname, nodename, release, version, machine, domainname
	b, err := t.ReadScratch(0, 6*field)
	if err != nil {
		return nil, err
	}
	str := func(i int) string {
		f := b[i*field : (i+1)*field]
		if n := bytes.IndexByte(f, 0); n >= 0 {
			f = f[:n]
		}
		return string(f)
	}
	return &utsns.UtsnsEntry{Nodename: proto.String(str(1)), Domainname: proto.String(str(5))}, nil
}
