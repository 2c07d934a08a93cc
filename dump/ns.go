package dump

import (
	"bytes"
	"fmt"
	"os"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/utsns"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/compel"
)

// sameNS reports whether pid is in lazyr's own namespace of the given kind.
func sameNS(pid int, kind string) bool {
	var a, b unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), &a) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", os.Getpid(), kind), &b) != nil {
		return true
	}
	return a.Ino == b.Ino && a.Dev == b.Dev
}

// checkUTS refuses a tree spread over UTS namespaces: restore recreates one, the root's.
func checkUTS(procs []*proc) error {
	root := procs[0]
	rootNS := nsID(root.pid, "uts")
	for _, p := range procs[1:] {
		if p.zombie {
			continue // a zombie has no namespaces left
		}
		if ns := nsID(p.pid, "uts"); rootNS == nil || ns == nil || *ns != *rootNS {
			return fmt.Errorf("process %d is in another UTS namespace than the root %d (a tree spread over UTS namespaces is not supported): %w",
				p.pid, root.pid, ErrUnsupported)
		}
	}
	return nil
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
