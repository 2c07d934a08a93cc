package integration

// System V IPC (issues 5 and 6): shared memory segments shared by the processes of a tree, attached
// read-only or marked IPC_RMID, restored eagerly and lazily; a tree that is the init of its own PID, UTS
// and IPC namespaces, whose sysctls, segments (attached or not), message queues and semaphores come back
// with their ids in a fresh namespace; and the refusal of a tree spread over IPC namespaces.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	ipc_shm "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-shm"
	ipc_var "github.com/checkpoint-restore/go-criu/v8/crit/images/ipc-var"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/images"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/sys"
	"github.com/lazyr/lazyr/internal/testutil"
)

var (
	sysvReadyRe  = regexp.MustCompile(`(?m)^ready sysv a=(\d+) b=(\d+) c=(\d+) key=([0-9a-f]+) child=(\d+)$`)
	sysvParentRe = regexp.MustCompile(`(?m)^tick (\d+) child=(\d+)$`)
	sysvChildRe  = regexp.MustCompile(`(?m)^child tick (\d+) parent=(\d+)$`)
)

// TestSysvShm: a parent and its child share System V segments (victims/sysv_shm.c): one keyed, with data
// pages, holes and a partial last page, attached twice by the child and split by mprotect in the parent;
// one attached read-only twice, once without its first page; one marked IPC_RMID while attached. After the restore both processes go on
// without a FAIL, each sees the other's counter move on (the segment is still one segment for both), the
// attaches are where they were with the same ids, protections and offsets, the read-only attach still
// cannot be made writable, and the IPC_RMID segment, which died with the dumped tree, is back with its
// id and marked again.
func TestSysvShm(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) { sysvShmRoundTrip(t, lazy) })
	}
}

func sysvShmRoundTrip(t *testing.T, lazy bool) {
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "sysv_shm"))
	m := v.WaitOutput(sysvReadyRe, outputTimeout)
	a, b, c, child := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3]), atoi(t, m[5])
	key, err := strconv.ParseUint(m[4], 16, 32)
	if err != nil {
		t.Fatal(err)
	}
	testutil.KillAtCleanup(t, child)
	t.Cleanup(func() { removeSegments(t, a, b) }) // the victim never removes A and B
	v.WaitOutput(lineRe(`^tick 3 child=`), outputTimeout)
	v.WaitOutput(lineRe(`^child tick 3 `), outputTimeout)
	parentMaps, childMaps := sysvMappings(t, v.Pid), sysvMappings(t, child)
	if n := strings.Count(parentMaps, "\n") + 1; n != 6 {
		t.Fatalf("parent has %d System V mappings, want 6 (A in three VMAs, B twice, C):\n%s", n, parentMaps)
	}

	dir := t.TempDir()
	dumpKill(t, v, dir)
	if err := testutil.WaitPidGone(child, goneTimeout); err != nil {
		t.Fatal(err)
	}
	before := v.Output()
	requireNoFail(t, before)
	lastTick, lastChildTick := lastNumber(t, before, tickRe), lastNumber(t, before, sysvChildRe)
	childSeen, parentSeen := maxGroup(t, before, sysvParentRe, 2), maxGroup(t, before, sysvChildRe, 2)

	// The images: the three segments, A's contents as its data pages only (the counters, five pattern
	// pages, the partial last page), not its never-written holes.
	segs := readSegments(t, dir)
	if len(segs) != 3 || segs[a] == nil || segs[b] == nil || segs[c] == nil {
		t.Fatalf("ipcns-shm holds segments %v, want %d, %d and %d", keys(segs), a, b, c)
	}
	if e := segs[a]; uint64(e.GetDesc().GetKey()) != key || e.GetSize() != 16*4096+100 || e.GetDesc().GetMode()&0o777 != 0o640 {
		t.Errorf("segment A in the images: key %#x size %d mode %#o, want key %#x size %d mode 0640",
			e.GetDesc().GetKey(), e.GetSize(), e.GetDesc().GetMode(), key, 16*4096+100)
	}
	if e := segs[c]; e.GetDesc().GetMode()&sys.ShmDest == 0 || e.GetDesc().GetKey() != 0 {
		t.Errorf("segment C in the images: mode %#o key %#x, want marked IPC_RMID (SHM_DEST, IPC_PRIVATE)", e.GetDesc().GetMode(), e.GetDesc().GetKey())
	}
	if pages := shmemPages(t, dir, a); pages != 7 {
		t.Errorf("segment A takes %d pages of images, want 7 (its data, not its holes)", pages)
	}
	requireAllDecode(t, dir, "ipcns-shm-")
	var ds unix.SysvShmDesc
	if _, err := unix.SysvShmCtl(c, unix.IPC_STAT, &ds); err == nil {
		t.Fatalf("segment C (IPC_RMID) outlived the dumped tree: %+v", ds)
	}

	if lazy {
		restoreLazyDetached(t, dir, v)
	} else {
		restoreDetached(t, dir, v)
	}
	testutil.KillAtCleanup(t, child)
	waitRestored(t, v, lineRe(`^tick %d child=`, lastTick+5))
	waitRestored(t, v, lineRe(`^child tick %d `, lastChildTick+5))
	out := v.Output()
	requireNoFail(t, out)
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one")
	}
	after := out[len(before):]
	requireConsecutive(t, "parent tick", numbers(t, out, tickRe), 0, lastTick+6)
	requireConsecutive(t, "child tick", numbers(t, out, sysvChildRe), 0, lastChildTick+6)
	// Shared still: each restored process sees the other's writes.
	if got := maxGroup(t, after, sysvParentRe, 2); got <= childSeen {
		t.Errorf("after the restore the parent sees the child's counter at %d at most, %d before the dump: the child's writes do not reach it", got, childSeen)
	}
	if got := maxGroup(t, after, sysvChildRe, 2); got <= parentSeen {
		t.Errorf("after the restore the child sees the parent's counter at %d at most, %d before the dump: the parent's writes do not reach it", got, parentSeen)
	}
	if got := sysvMappings(t, v.Pid); got != parentMaps {
		t.Errorf("parent's System V mappings after restore:\n%s\nbefore:\n%s", got, parentMaps)
	}
	if got := sysvMappings(t, child); got != childMaps {
		t.Errorf("child's System V mappings after restore:\n%s\nbefore:\n%s", got, childMaps)
	}
	requireReadOnlyAttach(t, v.Pid, b)
	if _, err := unix.SysvShmCtl(c, unix.IPC_STAT, &ds); err != nil || ds.Perm.Mode&sys.ShmDest == 0 || ds.Nattch == 0 {
		t.Errorf("segment C after restore: %v, mode %#o, %d attaches; want it back, attached and marked IPC_RMID", err, ds.Perm.Mode, ds.Nattch)
	}
	if _, err := unix.SysvShmCtl(a, unix.IPC_STAT, &ds); err != nil || uint64(uint32(ds.Perm.Key)) != key {
		t.Errorf("segment A after restore: %v, key %#x", err, uint32(ds.Perm.Key))
	}
}

// TestIPCNamespace: the init of its own PID, UTS and IPC namespaces (victims/sysv_ns.c) has set
// kernel.shmmni and kernel.msgmax in its IPC namespace and holds an attached segment of id 0, one with a
// chosen id, an unattached keyed segment, a message queue with two messages and a semaphore set. It comes back in a
// fresh IPC namespace (not the host's), where, checked by the victim every tick and from outside, all of
// it is there again with the same ids, contents and values.
func TestIPCNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) { ipcNamespaceRoundTrip(t, lazy) })
	}
}

var ipcnsReadyRe = regexp.MustCompile(`(?m)^ready ipcns shm=(\d+) unattached=(\d+) msq=(\d+) sem=(\d+) pid=1$`)

func ipcNamespaceRoundTrip(t *testing.T, lazy bool) {
	const shmID, shmmni, msgmax = 5*32768 + 7, 1234, 12345
	bin := testutil.BuildVictim(t, "sysv_ns")
	v := testutil.StartVictim(t, "sh", "-c", `exec unshare -pfiu "$@" 2>/dev/null`, "sh", bin)
	pid := childOf(t, v.Pid)
	testutil.KillAtCleanup(t, pid)
	m := v.WaitOutput(ipcnsReadyRe, outputTimeout)
	unattached, msq, sem := atoi(t, m[2]), atoi(t, m[3]), atoi(t, m[4])
	if atoi(t, m[1]) != shmID {
		t.Fatalf("victim got segment id %s, want %d", m[1], shmID)
	}
	v.WaitOutput(lineRe(`^tick 2 ipc ok `), outputTimeout)
	if sameIPCNS(t, pid) {
		t.Fatal("victim shares the test's IPC namespace")
	}

	dir := t.TempDir()
	dump(t, pid, dir)
	if err := testutil.WaitPidGone(pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	before := v.Output()
	requireNoFail(t, before)
	last := lastNumber(t, before, tickRe)

	// The images: the namespace's sysctls, both segments, the queue and the semaphores.
	nsID := rootIPCNS(t, dir)
	d, err := images.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	vars, err := images.ReadOne[ipc_var.IpcVarEntry](d, images.IpcVarName(nsID))
	if err != nil {
		t.Fatal(err)
	}
	if vars.GetShmCtlmni() != shmmni || vars.GetMsgCtlmax() != msgmax {
		t.Errorf("ipcns-var: shmmni %d msgmax %d, want %d and %d", vars.GetShmCtlmni(), vars.GetMsgCtlmax(), shmmni, msgmax)
	}
	if segs := readSegments(t, dir); len(segs) != 3 || segs[0] == nil || segs[shmID] == nil || segs[unattached] == nil {
		t.Errorf("ipcns-shm holds segments %v, want 0, %d and %d (attached or not)", keys(segs), shmID, unattached)
	}
	if qs, err := d.ReadIpcMsg(nsID); err != nil || len(qs) != 1 || int(qs[0].Entry.GetDesc().GetId()) != msq ||
		len(qs[0].Msgs) != 2 || string(qs[0].Msgs[1].Data) != "world!!" || qs[0].Msgs[1].Type != 9 {
		t.Errorf("ipcns-msg: %v, %+v; want queue %d with its two messages", err, qs, msq)
	}
	if ss, err := d.ReadIpcSem(nsID); err != nil || len(ss) != 1 || int(ss[0].Entry.GetDesc().GetId()) != sem ||
		fmt.Sprint(ss[0].Values) != "[1 5 42]" {
		t.Errorf("ipcns-sem: %v, %+v; want set %d with values 1 5 42", err, ss, sem)
	}
	requireAllDecode(t, dir, "ipcns-shm-")

	restored := restoreOutside(t, dir, lazy)
	if _, err := testutil.WaitPidOutput(restored, v.OutputFile, lineRe(`^tick %d ipc ok shm=%d shmmni=%d msgmax=%d$`, last+5, shmID, shmmni, msgmax), outputTimeout); err != nil {
		t.Fatalf("restored victim: %v\n%s", err, testutil.Tail(v.Output(), 10))
	}
	out := v.Output()
	requireNoFail(t, out)
	if !strings.HasPrefix(out, before) {
		t.Fatalf("restored output does not continue the dumped one")
	}
	requireConsecutive(t, "tick", numbers(t, out, tickRe), 0, last+6)
	if ns := procStatusField(t, restored, "NSpid"); !strings.HasSuffix(ns, "\t1") && !strings.HasSuffix(ns, " 1") {
		t.Errorf("restored victim has NSpid %q, want pid 1 in its own namespace", ns)
	}
	if sameIPCNS(t, restored) {
		t.Fatal("restored victim is in the test's IPC namespace, want a fresh one")
	}
	// From outside, in the restored namespace: the sysctl and the objects with their ids.
	err = sys.InNamespaceOf(restored, "ipc", func() error {
		b, err := os.ReadFile("/proc/sys/kernel/shmmni")
		if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(shmmni) {
			return fmt.Errorf("kernel.shmmni is %q (%v), want %d", b, err, shmmni)
		}
		var ds unix.SysvShmDesc
		if _, err := unix.SysvShmCtl(shmID, unix.IPC_STAT, &ds); err != nil || ds.Nattch != 1 {
			return fmt.Errorf("segment %d: %v, %d attaches, want 1", shmID, err, ds.Nattch)
		}
		if _, err := unix.SysvShmCtl(unattached, unix.IPC_STAT, &ds); err != nil || ds.Perm.Key != 0x4c5a0055 {
			return fmt.Errorf("unattached segment %d: %v, key %#x", unattached, err, ds.Perm.Key)
		}
		var qs sys.MsqidDS
		if _, err := sys.MsgCtl(msq, unix.IPC_STAT, &qs); err != nil || qs.Qnum != 2 {
			return fmt.Errorf("message queue %d: %v, %d messages, want 2", msq, err, qs.Qnum)
		}
		vals := make([]uint16, 3)
		if err := sys.SemGetAll(sem, vals); err != nil || fmt.Sprint(vals) != "[1 5 42]" {
			return fmt.Errorf("semaphores %d: %v, values %v", sem, err, vals)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestDumpRefusesSplitIPCNamespace: a tree member in another IPC namespace than the root is refused
// before anything is killed, and the whole tree goes on as it was.
func TestDumpRefusesSplitIPCNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	counter := testutil.BuildVictim(t, "counter")
	v := testutil.StartVictim(t, "/bin/sh", "-c", "unshare -i "+counter+" 1 & wait")
	inner := childOf(t, v.Pid)
	testutil.KillAtCleanup(t, inner) // the victim's cleanup kills only the shell
	v.WaitOutput(lineRe(`^tick 1\b`), outputTimeout)
	_, stderr, code := testutil.Lazyr(t, "dump", "-t", strconv.Itoa(v.Pid), "-D", t.TempDir())
	requireFailure(t, "dump of a tree spread over IPC namespaces", stderr, code,
		regexp.MustCompile(`(?i)IPC namespace`), word(strconv.Itoa(inner)))
	n := len(numbers(t, v.Output(), tickRe))
	v.WaitOutput(lineRe(`^tick %d\b`, n+1), outputTimeout)
	for _, pid := range []int{v.Pid, inner} {
		if st := procStatusField(t, pid, "TracerPid"); st != "0" {
			t.Errorf("%d still traced (TracerPid %s)", pid, st)
		}
	}
}

// requireAllDecode checks that every image of dir decodes with go-criu's crit (see decodeImage for
// ipcns-shm), and that there is one whose name starts with want.
func requireAllDecode(t *testing.T, dir, want string) {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range paths {
		name := filepath.Base(p)
		if strings.HasPrefix(name, "pages-") {
			continue // raw page data
		}
		if _, err := decodeImage(p); err != nil {
			t.Errorf("crit cannot decode %s: %v", name, err)
		}
		found = found || strings.HasPrefix(name, want)
	}
	if !found {
		t.Errorf("no %s* image among %v", want, paths)
	}
}

// sysvMappings returns pid's System V attaches from /proc/PID/maps, whole lines: address, protection,
// offset, inode (the segment id) and key.
func sysvMappings(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " /SYSV") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// requireReadOnlyAttach checks that pid's attach of segment id is a SHM_RDONLY one: no VM_MAYWRITE, so
// mprotect cannot make it writable.
func requireReadOnlyAttach(t *testing.T, pid, id int) {
	t.Helper()
	maps, err := procfs.Smaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if strings.HasPrefix(m.Path, "/SYSV") && m.Inode == uint64(id) {
			if m.Write || m.HasFlag("mw") {
				t.Errorf("attach of segment %d at %#x is writable or may become so (VmFlags %v), want SHM_RDONLY", id, m.Start, m.VmFlags)
			}
			return
		}
	}
	t.Errorf("no attach of segment %d in process %d", id, pid)
}

// readSegments returns the segments of the image set's ipcns-shm image, by id.
func readSegments(t *testing.T, dir string) map[int]*ipc_shm.IpcShmEntry {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "ipcns-shm-*.img"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("ipcns-shm images: %v (%v), want one", paths, err)
	}
	img, err := decodeImage(paths[0])
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(paths[0]), err)
	}
	out := map[int]*ipc_shm.IpcShmEntry{}
	for _, e := range img.Entries {
		s, ok := e.Message.(*ipc_shm.IpcShmEntry)
		if !ok || !s.GetInPagemaps() {
			t.Fatalf("%s: entry %v, want IpcShmEntry with in_pagemaps", filepath.Base(paths[0]), e.Message)
		}
		out[int(s.GetDesc().GetId())] = s
	}
	return out
}

func keys[V any](m map[int]V) []int {
	var out []int
	for k := range m {
		out = append(out, k)
	}
	return out
}

// shmemPages returns how many pages pagemap-shmem-ID.img stores (and checks that crit decodes it).
func shmemPages(t *testing.T, dir string, id int) uint64 {
	t.Helper()
	img := mustDecode(t, dir, images.PagemapShmemName(uint64(id)))
	var n uint64
	for _, e := range img.Entries[1:] {
		if p, ok := e.Message.(*pagemap.PagemapEntry); ok {
			n += p.GetNrPages()
		}
	}
	return n
}

// rootIPCNS returns the IPC namespace id the images record for the root.
func rootIPCNS(t *testing.T, dir string) uint32 {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "ipcns-var-*.img"))
	if err != nil || len(paths) != 1 {
		t.Fatalf("ipcns-var images: %v (%v), want one", paths, err)
	}
	id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(paths[0]), "ipcns-var-"), ".img"), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(id)
}

// maxGroup returns the largest value of group g over every match of re in out.
func maxGroup(t *testing.T, out string, re *regexp.Regexp, g int) int {
	t.Helper()
	best := -1
	for _, m := range re.FindAllStringSubmatch(out, -1) {
		best = max(best, atoi(t, m[g]))
	}
	if best < 0 {
		t.Fatalf("no match of %q", re)
	}
	return best
}

// sameIPCNS reports whether pid is in the test's IPC namespace.
func sameIPCNS(t *testing.T, pid int) bool {
	t.Helper()
	same, err := sys.SameNamespace(pid, "ipc")
	if err != nil {
		t.Fatal(err)
	}
	return same
}

// removeSegments removes the given segments of the test's IPC namespace, if they are still there.
func removeSegments(t *testing.T, ids ...int) {
	for _, id := range ids {
		if _, err := unix.SysvShmCtl(id, unix.IPC_RMID, nil); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EIDRM) {
			t.Errorf("remove segment %d: %v", id, err)
		}
	}
}

// restoreOutside restores dir detached (lazily with a lazy-pages daemon if lazy) and returns the root's
// pid as the test sees it, which a root restored into a fresh PID namespace does not share with the
// images.
func restoreOutside(t *testing.T, dir string, lazy bool) int {
	t.Helper()
	work := t.TempDir()
	pidfile := filepath.Join(work, "restore.pid")
	log := filepath.Join(work, "restore.log")
	args := []string{"restore", "-D", dir, "-d", "--pidfile", pidfile, "-o", log, "-v", "4"}
	if lazy {
		lpPid := filepath.Join(work, "lp.pid")
		if _, stderr, code := testutil.Lazyr(t, "lazy-pages", "-D", dir, "-W", work, "--daemon", "--pidfile", lpPid,
			"-o", filepath.Join(work, "lp.log"), "-v", "4"); code != 0 {
			t.Fatalf("lazy-pages: exit %d: %s", code, stderr)
		}
		if b, err := os.ReadFile(lpPid); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				testutil.KillAtCleanup(t, pid)
			}
		}
		args = append(args, "--lazy-pages", "-W", work)
	}
	_, stderr, code := testutil.Lazyr(t, args...)
	b, _ := os.ReadFile(pidfile)
	pid, perr := strconv.Atoi(strings.TrimSpace(string(b)))
	if perr == nil {
		testutil.KillAtCleanup(t, pid)
	}
	if code != 0 {
		t.Fatalf("lazyr %s: exit %d\nstderr:\n%s\nlog:\n%s", strings.Join(args, " "), code, stderr, logTail(log))
	}
	if perr != nil {
		t.Fatalf("pidfile %q: %v", b, perr)
	}
	return pid
}
