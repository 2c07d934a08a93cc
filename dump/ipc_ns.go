package dump

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/sys"
)

// The IPC namespace. A tree whose root has an IPC namespace of its own (not lazyr's) takes all of it
// along, as CRIU does: the ipc sysctls (ipcns-var), every System V shared memory segment, attached or
// not (ipcns-shm), message queues (ipcns-msg) and semaphore sets (ipcns-sem), each with its id, so that
// a restore into a fresh namespace can bring them back before the tasks attach. A tree in lazyr's own
// namespace only takes the segments its tasks have attached. Every process of the tree must be in the
// root's IPC namespace: System V ids mean nothing in another one.

// prepareIPC refuses a tree spread over IPC namespaces and registers the IPC images, written with the
// others while the tree is still frozen.
// Preconditions: called from Tracer.Do.
func prepareIPC(procs []*proc, ft *fileTable) error {
	root := procs[0]
	rootNS, err := requireRootNamespace(procs, "ipc", "IPC")
	if err != nil {
		return err
	}
	// Compared with the tracer thread's own namespace, which is lazyr's.
	same, err := sys.SameNamespace(root.pid, "ipc")
	if err != nil {
		return fmt.Errorf("process %d: %w", root.pid, err)
	}
	own := !same
	ft.addRawImage(func(d *images.Dir) error {
		err := sys.InNamespaceOf(root.pid, "ipc", func() error {
			if own {
				if err := dumpIPCNS(d, rootNS); err != nil {
					return err
				}
			}
			return dumpShm(d, ft, rootNS, own)
		})
		if err != nil {
			return fmt.Errorf("IPC namespace of %d: %w", root.pid, err)
		}
		return nil
	})
	return nil
}

// dumpIPCNS writes the namespace's sysctls, message queues and semaphore sets.
// Preconditions: runs in the namespace (sys.InNamespaceOf).
func dumpIPCNS(d *images.Dir, nsID uint32) error {
	v, err := readIPCVars()
	if err != nil {
		return err
	}
	if err := d.Write(images.IpcVarName(nsID), v); err != nil {
		return err
	}
	queues, err := dumpMsgQueues()
	if err != nil {
		return err
	}
	if err := d.WriteIpcMsg(nsID, queues); err != nil {
		return err
	}
	sets, err := dumpSemSets()
	if err != nil {
		return err
	}
	return d.WriteIpcSem(nsID, sets)
}

// readSysctl reads a number sysctl of the calling thread's namespaces (/proc/sys/NAME).
func readSysctl(name string) (int64, error) {
	b, err := os.ReadFile("/proc/sys/" + name)
	if err != nil {
		return 0, fmt.Errorf("sysctl %s: %w", name, err)
	}
	s := strings.TrimSpace(string(b))
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return int64(u), nil // shmmax and shmall may use all 64 bits
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("sysctl %s: %q is not a number", name, s)
	}
	return n, nil
}

// readIPCVars reads CRIU's set of IPC namespace sysctls. A *_next_id of -1 (no id asked for) is left
// out: it cannot be written back, and is what a fresh namespace has anyway.
func readIPCVars() (*ipc_var.IpcVarEntry, error) {
	v := &ipc_var.IpcVarEntry{}
	b, err := os.ReadFile("/proc/sys/kernel/sem")
	if err != nil {
		return nil, fmt.Errorf("sysctl kernel/sem: %w", err)
	}
	for _, f := range strings.Fields(string(b)) {
		n, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("sysctl kernel/sem: %q", b)
		}
		v.SemCtls = append(v.SemCtls, uint32(n))
	}
	u32 := func(dst **uint32, name string, optional bool) error {
		n, err := readSysctl(name)
		if err != nil {
			return err
		}
		if optional && n < 0 {
			return nil
		}
		*dst = proto.Uint32(uint32(n))
		return nil
	}
	u64 := func(dst **uint64, name string) error {
		n, err := readSysctl(name)
		if err != nil {
			return err
		}
		*dst = proto.Uint64(uint64(n))
		return nil
	}
	for _, f := range []error{
		u32(&v.MsgCtlmax, "kernel/msgmax", false),
		u32(&v.MsgCtlmnb, "kernel/msgmnb", false),
		u32(&v.MsgCtlmni, "kernel/msgmni", false),
		u32(&v.AutoMsgmni, "kernel/auto_msgmni", false),
		u64(&v.ShmCtlmax, "kernel/shmmax"),
		u64(&v.ShmCtlall, "kernel/shmall"),
		u32(&v.ShmCtlmni, "kernel/shmmni", false),
		u32(&v.ShmRmidForced, "kernel/shm_rmid_forced", false),
		u32(&v.MqQueuesMax, "fs/mqueue/queues_max", false),
		u32(&v.MqMsgMax, "fs/mqueue/msg_max", false),
		u32(&v.MqMsgsizeMax, "fs/mqueue/msgsize_max", false),
		u32(&v.MqMsgDefault, "fs/mqueue/msg_default", false),
		u32(&v.MqMsgsizeDefault, "fs/mqueue/msgsize_default", false),
		u32(&v.MsgNextId, "kernel/msg_next_id", true),
		u32(&v.SemNextId, "kernel/sem_next_id", true),
		u32(&v.ShmNextId, "kernel/shm_next_id", true),
	} {
		if f != nil {
			return nil, f
		}
	}
	return v, nil
}
