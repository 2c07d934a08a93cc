package uffd

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newFD(t *testing.T, features uint64) *FD {
	t.Helper()
	u, err := New(unix.O_CLOEXEC | unix.O_NONBLOCK)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { u.Close() })
	if _, _, err := u.API(features); err != nil {
		t.Fatalf("API(%s): %v", FeatureNames(features), err)
	}
	return u
}

// waitMsg polls the fd and returns the next message, failing the test after
// a timeout instead of hanging.
func waitMsg(t *testing.T, u *FD) Msg {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(u.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 100); err != nil && err != unix.EINTR {
			t.Fatalf("poll: %v", err)
		}
		var msgs [1]Msg
		n, err := u.ReadMsgs(msgs[:])
		if err != nil {
			t.Fatalf("ReadMsgs: %v", err)
		}
		if n == 1 {
			return msgs[0]
		}
	}
	t.Fatal("no userfaultfd message within 5s")
	return Msg{}
}

// onThread runs f on a locked OS thread in a new goroutine, so a fault it
// takes blocks only that thread, and returns a channel closed when f is done.
func onThread(f func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer close(done)
		f()
	}()
	return done
}

func waitDone(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s did not finish", what)
	}
}

func pattern(seed byte) []byte {
	p := make([]byte, pageSize)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}

func TestABIMatchesHeader(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed: cannot compile the header check")
	}
	bin := filepath.Join(t.TempDir(), "abi")
	if out, err := exec.Command(gcc, "-O0", "-o", bin, "testdata/abi.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).Output()
	if err != nil {
		t.Fatalf("abi: %v", err)
	}
	want := map[string]uint64{
		"UFFD_API":                           APIVersion,
		"USERFAULTFD_IOC_NEW":                uint64(ioctlNew),
		"UFFDIO_API":                         uint64(ioctlAPI),
		"UFFDIO_REGISTER":                    uint64(ioctlRegister),
		"UFFDIO_UNREGISTER":                  uint64(ioctlUnregister),
		"UFFDIO_WAKE":                        uint64(ioctlWake),
		"UFFDIO_COPY":                        uint64(ioctlCopy),
		"UFFDIO_ZEROPAGE":                    uint64(ioctlZeroPage),
		"UFFDIO_WRITEPROTECT":                uint64(ioctlWriteProtect),
		"UFFDIO_CONTINUE":                    uint64(ioctlContinue),
		"sizeof(struct uffd_msg)":            MsgSize,
		"sizeof(struct uffdio_api)":          sizeofAPI,
		"sizeof(struct uffdio_register)":     sizeofRegister,
		"sizeof(struct uffdio_copy)":         sizeofCopy,
		"sizeof(struct uffdio_zeropage)":     sizeofZeroPage,
		"sizeof(struct uffdio_writeprotect)": sizeofWriteProtect,
		"sizeof(struct uffdio_continue)":     sizeofContinue,
		"UFFD_FEATURE_EVENT_FORK":            FeatureEventFork,
		"UFFD_FEATURE_EVENT_REMAP":           FeatureEventRemap,
		"UFFD_FEATURE_EVENT_REMOVE":          FeatureEventRemove,
		"UFFD_FEATURE_EVENT_UNMAP":           FeatureEventUnmap,
		"UFFD_FEATURE_SIGBUS":                FeatureSigbus,
		"UFFD_FEATURE_THREAD_ID":             FeatureThreadID,
		"UFFD_FEATURE_MINOR_SHMEM":           FeatureMinorShmem,
		"UFFD_FEATURE_WP_HUGETLBFS_SHMEM":    FeatureWPHugetlbfsShmem,
		"UFFD_EVENT_PAGEFAULT":               uint64(EventPagefault),
		"UFFD_EVENT_UNMAP":                   uint64(EventUnmap),
		"UFFDIO_REGISTER_MODE_MINOR":         ModeMinor,
		"UFFD_PAGEFAULT_FLAG_MINOR":          PagefaultFlagMinor,
	}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		i := strings.LastIndexByte(line, ' ')
		name, val := line[:i], line[i+1:]
		got, err := strconv.ParseUint(val, 10, 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		w, ok := want[name]
		if !ok {
			t.Fatalf("header prints %s, test does not know it", name)
		}
		if got != w {
			t.Errorf("%s: header %#x, package %#x", name, got, w)
		}
		seen++
	}
	if seen != len(want) {
		t.Errorf("compared %d values, want %d", seen, len(want))
	}
}

func TestFeatureNames(t *testing.T) {
	if got := FeatureNames(FeatureEventFork | FeatureEventUnmap | 1<<40); got != "EVENT_FORK|EVENT_UNMAP|bit 40" {
		t.Errorf("FeatureNames = %q", got)
	}
	if got := FeatureNames(0); got != "none" {
		t.Errorf("FeatureNames(0) = %q", got)
	}
}

func TestAPIHandshake(t *testing.T) {
	u, err := New(unix.O_CLOEXEC | unix.O_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	got, ioctls, err := u.API(FeatureNonCooperativeEvents | FeatureThreadID)
	if err != nil {
		t.Fatalf("API: %v", err)
	}
	if got&FeatureNonCooperativeEvents != FeatureNonCooperativeEvents {
		t.Errorf("kernel reports %s, lacks non-cooperative events", FeatureNames(got))
	}
	for _, bit := range []int{IoctlAPI, IoctlRegister, IoctlUnregister} {
		if ioctls&(1<<bit) == 0 {
			t.Errorf("ioctl bit %#x missing from %#x", bit, ioctls)
		}
	}
	// The handshake succeeds only once per fd.
	if _, _, err := u.API(0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("second API: %v, want EINVAL", err)
	}
}

func TestAPIMissingFeature(t *testing.T) {
	u, err := New(unix.O_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	const bogus = 1 << 50
	_, _, err = u.API(FeatureEventFork | bogus)
	var mf *MissingFeaturesError
	if !errors.As(err, &mf) {
		t.Fatalf("API with bogus bit: %v, want MissingFeaturesError", err)
	}
	if mf.Missing != bogus || !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "bit 50") {
		t.Errorf("error %v: missing %#x", err, mf.Missing)
	}
	// The failed handshake must not have used up the fd on this kernel.
	if _, _, err := u.API(FeatureEventFork); err != nil {
		t.Errorf("API after failed API: %v", err)
	}
}

func TestDevUserfaultfd(t *testing.T) {
	fd, err := newDev(unix.O_CLOEXEC | unix.O_NONBLOCK)
	if err != nil {
		t.Fatalf("newDev: %v", err)
	}
	u := FromFd(fd)
	defer u.Close()
	if _, _, err := u.API(FeatureEventRemove); err != nil {
		t.Fatalf("API on /dev/userfaultfd fd: %v", err)
	}
	r := mapAnon(t, 1)
	if _, err := u.Register(r.page(0), pageSize, ModeMissing); err != nil {
		t.Fatalf("Register: %v", err)
	}
}

func TestCopyServesFault(t *testing.T) {
	u := newFD(t, FeatureThreadID)
	r := mapAnon(t, 16)
	ioctls, err := u.Register(r.page(0), uint64(r.size()), ModeMissing)
	if err != nil {
		t.Fatal(err)
	}
	if ioctls&(1<<IoctlCopy) == 0 || ioctls&(1<<IoctlZeroPage) == 0 {
		t.Fatalf("range ioctls %#x lack COPY/ZEROPAGE", ioctls)
	}
	mem := r.bytes()
	var got byte
	var tid int
	done := onThread(func() {
		tid = unix.Gettid()
		got = mem[3*pageSize+100]
	})
	m := waitMsg(t, u)
	if m.Event != EventPagefault || m.Pagefault.Address != r.page(3) || m.Pagefault.Flags&PagefaultFlagWrite != 0 {
		t.Fatalf("message %v, want read fault at %#x", m, r.page(3))
	}
	src := pattern(42)
	n, err := u.Copy(r.page(3), src, 0)
	if err != nil || n != pageSize {
		t.Fatalf("Copy = %d, %v", n, err)
	}
	waitDone(t, done, "faulting reader")
	if got != src[100] {
		t.Errorf("reader saw %d, want %d", got, src[100])
	}
	if int(m.Pagefault.Ptid) != tid {
		t.Errorf("ptid %d, want faulting thread %d", m.Pagefault.Ptid, tid)
	}

	// A write fault says so.
	done = onThread(func() { mem[5*pageSize] = 1 })
	m = waitMsg(t, u)
	if m.Pagefault.Address != r.page(5) || m.Pagefault.Flags&PagefaultFlagWrite == 0 {
		t.Fatalf("message %v, want write fault at %#x", m, r.page(5))
	}
	if _, err := u.Copy(r.page(5), pattern(1), 0); err != nil {
		t.Fatal(err)
	}
	waitDone(t, done, "faulting writer")
	if mem[5*pageSize] != 1 || mem[5*pageSize+1] != pattern(1)[1] {
		t.Errorf("page 5 after write: % x", mem[5*pageSize:5*pageSize+2])
	}
}

func TestCopyExistingAndPartial(t *testing.T) {
	u := newFD(t, 0)
	r := mapAnon(t, 8)
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeMissing); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Copy(r.page(2), pattern(2), 0); err != nil {
		t.Fatal(err)
	}
	n, err := u.Copy(r.page(2), pattern(9), 0)
	if n != 0 || !errors.Is(err, unix.EEXIST) {
		t.Fatalf("second Copy = %d, %v; want 0, EEXIST", n, err)
	}
	// Four pages over a present one: the kernel copies up to it and, by
	// its own convention, reports EAGAIN with the progress.
	src := bytes.Repeat(pattern(5), 4)
	n, err = u.Copy(r.page(0), src, 0)
	if n != 2*pageSize || !errors.Is(err, unix.EAGAIN) {
		t.Fatalf("partial Copy = %d, %v; want %d, EAGAIN", n, err, 2*pageSize)
	}
	n, err = u.Copy(r.page(0)+uint64(n), src[n:], 0)
	if n != 0 || !errors.Is(err, unix.EEXIST) {
		t.Fatalf("Copy of the rest = %d, %v; want 0, EEXIST", n, err)
	}
	mem := r.bytes()
	if !bytes.Equal(mem[pageSize:2*pageSize], pattern(5)) || !bytes.Equal(mem[2*pageSize:3*pageSize], pattern(2)) {
		t.Error("page contents wrong after partial copy")
	}
	if _, err := u.Copy(r.page(0), nil, 0); !errors.Is(err, unix.EINVAL) {
		t.Errorf("empty Copy: %v", err)
	}
}

func TestZeroPage(t *testing.T) {
	u := newFD(t, 0)
	r := mapAnon(t, 4)
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeMissing); err != nil {
		t.Fatal(err)
	}
	mem := r.bytes()
	var got byte = 0xff
	done := onThread(func() { got = mem[pageSize+9] })
	m := waitMsg(t, u)
	if m.Pagefault.Address != r.page(1) {
		t.Fatalf("message %v", m)
	}
	n, err := u.ZeroPage(r.page(1), pageSize, 0)
	if n != pageSize || err != nil {
		t.Fatalf("ZeroPage = %d, %v", n, err)
	}
	waitDone(t, done, "reader")
	if got != 0 {
		t.Errorf("read %d from zero page", got)
	}
	if n, err := u.ZeroPage(r.page(1), pageSize, 0); n != 0 || !errors.Is(err, unix.EEXIST) {
		t.Errorf("second ZeroPage = %d, %v; want EEXIST", n, err)
	}
}

func TestWriteProtect(t *testing.T) {
	u := newFD(t, FeaturePagefaultFlagWP)
	r := mapAnon(t, 2)
	mem := r.bytes()
	mem[0] = 7 // populate: WP on anonymous memory protects present pages
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeWP); err != nil {
		t.Fatal(err)
	}
	if err := u.WriteProtect(r.page(0), pageSize, true); err != nil {
		t.Fatal(err)
	}
	done := onThread(func() { mem[1] = 8 })
	m := waitMsg(t, u)
	want := PagefaultFlagWP | PagefaultFlagWrite
	if m.Event != EventPagefault || m.Pagefault.Address != r.page(0) || m.Pagefault.Flags&want != want {
		t.Fatalf("message %v, want WP write fault at %#x", m, r.page(0))
	}
	if err := u.WriteProtect(r.page(0), pageSize, false); err != nil {
		t.Fatal(err)
	}
	waitDone(t, done, "writer")
	if mem[0] != 7 || mem[1] != 8 {
		t.Errorf("memory % x", mem[:2])
	}
}

func TestContinueMinorFault(t *testing.T) {
	u := newFD(t, FeatureMinorShmem)
	fd, err := unix.MemfdCreate("uffd-minor", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, 2*pageSize); err != nil {
		t.Fatal(err)
	}
	a, b := mapShared(t, fd, 2), mapShared(t, fd, 2)
	if _, err := u.Register(b.page(0), uint64(b.size()), ModeMinor); err != nil {
		t.Fatal(err)
	}
	a.bytes()[5] = 55 // page cache now holds page 0
	var got byte
	done := onThread(func() { got = b.bytes()[5] })
	m := waitMsg(t, u)
	if m.Pagefault.Address != b.page(0) || m.Pagefault.Flags&PagefaultFlagMinor == 0 {
		t.Fatalf("message %v, want minor fault at %#x", m, b.page(0))
	}
	if n, err := u.Continue(b.page(0), pageSize, 0); n != pageSize || err != nil {
		t.Fatalf("Continue = %d, %v", n, err)
	}
	waitDone(t, done, "reader")
	if got != 55 {
		t.Errorf("read %d through the second mapping", got)
	}
}

func TestEvents(t *testing.T) {
	u := newFD(t, FeatureEventRemove|FeatureEventRemap|FeatureEventUnmap)
	// Close before the regions' cleanups: with EVENT_UNMAP an munmap
	// would wait for someone to read its event.
	defer u.Close()
	r := mapAnon(t, 8)
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeMissing); err != nil {
		t.Fatal(err)
	}
	if n, _ := u.ReadMsgs(make([]Msg, 4)); n != 0 {
		t.Fatalf("%d messages before any event", n)
	}

	// madvise(DONTNEED) blocks until the REMOVE event is read.
	var errno unix.Errno
	done := onThread(func() {
		_, _, errno = unix.Syscall(unix.SYS_MADVISE, uintptr(r.page(2)), 2*pageSize, unix.MADV_DONTNEED)
	})
	m := waitMsg(t, u)
	if m.Event != EventRemove || m.Remove.Start != r.page(2) || m.Remove.End != r.page(4) {
		t.Fatalf("message %v, want remove [%#x,%#x)", m, r.page(2), r.page(4))
	}
	waitDone(t, done, "madvise")
	if errno != 0 {
		t.Fatal(errno)
	}

	// munmap of the tail: UNMAP.
	done = onThread(func() {
		_, _, errno = unix.Syscall(unix.SYS_MUNMAP, uintptr(r.page(6)), 2*pageSize, 0)
	})
	m = waitMsg(t, u)
	if m.Event != EventUnmap || m.Remove.Start != r.page(6) || m.Remove.End != r.page(8) {
		t.Fatalf("message %v, want unmap [%#x,%#x)", m, r.page(6), r.page(8))
	}
	waitDone(t, done, "munmap")
	// Forget the mapping without unmapping it: the mremap below moves it.
	moved := r.mem[:6*pageSize]
	r.mem = nil

	// mremap to a fresh place: REMAP.
	dst := mapAnon(t, 6)
	var newAddr uintptr
	done = onThread(func() {
		newAddr, _, errno = unix.Syscall6(unix.SYS_MREMAP, r.addr, uintptr(len(moved)), uintptr(len(moved)),
			unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED, dst.addr, 0)
	})
	m = waitMsg(t, u)
	// Kernel quirk: a moving mremap reports REMAP and then UNMAP of the
	// old range, and returns only after both were read.
	m2 := waitMsg(t, u)
	waitDone(t, done, "mremap")
	if errno != 0 || newAddr != dst.addr {
		t.Fatalf("mremap: %v, %#x", errno, newAddr)
	}
	if m.Event != EventRemap || m.Remap.From != r.page(0) || m.Remap.To != dst.page(0) || m.Remap.Len != uint64(len(moved)) {
		t.Fatalf("message %v, want remap %#x -> %#x len %#x", m, r.page(0), dst.page(0), len(moved))
	}
	if m2.Event != EventUnmap || m2.Remove.Start != r.page(0) || m2.Remove.End != r.page(6) {
		t.Fatalf("message after remap %v, want unmap of the old range", m2)
	}
	// The moved range is still registered with the same fd.
	var sink byte
	done = onThread(func() { sink = dst.bytes()[0] })
	select {
	case <-done:
		t.Fatal("read of moved range did not fault")
	case <-time.After(100 * time.Millisecond):
	}
	m = waitMsg(t, u)
	if m.Event != EventPagefault || m.Pagefault.Address != dst.page(0) {
		t.Fatalf("message %v, want fault at the new place", m)
	}
	if _, err := u.ZeroPage(dst.page(0), pageSize, 0); err != nil {
		t.Fatal(err)
	}
	waitDone(t, done, "reader")
	if sink != 0 {
		t.Errorf("zero page read %d", sink)
	}
}

func TestDecodeMsg(t *testing.T) {
	le := binary.LittleEndian
	raw := func(ev uint8, words ...uint64) []byte {
		b := make([]byte, MsgSize)
		b[0] = ev
		for i, w := range words {
			le.PutUint64(b[8+8*i:], w)
		}
		return b
	}
	cases := []struct {
		b    []byte
		want Msg
	}{
		{raw(EventPagefault, 3, 0x7000, 1234), Msg{Event: EventPagefault, Pagefault: Pagefault{Flags: 3, Address: 0x7000, Ptid: 1234}}},
		{raw(EventFork, 17), Msg{Event: EventFork, Fork: Fork{UFD: 17}}},
		{raw(EventRemap, 0x1000, 0x9000, 0x2000), Msg{Event: EventRemap, Remap: Remap{From: 0x1000, To: 0x9000, Len: 0x2000}}},
		{raw(EventRemove, 0x1000, 0x3000), Msg{Event: EventRemove, Remove: Remove{Start: 0x1000, End: 0x3000}}},
		{raw(EventUnmap, 0x4000, 0x5000), Msg{Event: EventUnmap, Remove: Remove{Start: 0x4000, End: 0x5000}}},
	}
	for _, c := range cases {
		got, err := DecodeMsg(c.b)
		if err != nil || got != c.want {
			t.Errorf("DecodeMsg(%x) = %v, %v; want %v", c.b, got, err, c.want)
		}
	}
	if _, err := DecodeMsg(raw(0x99)); !errors.Is(err, ErrUnknownEvent) {
		t.Errorf("unknown event: %v", err)
	}
	if _, err := DecodeMsg(make([]byte, 31)); err == nil {
		t.Error("short message decoded")
	}
}

func FuzzDecodeMsg(f *testing.F) {
	f.Add(make([]byte, MsgSize))
	b := make([]byte, MsgSize)
	b[0] = EventRemap
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMsg(b)
		if len(b) != MsgSize {
			if err == nil {
				t.Fatal("decoded a message of the wrong size")
			}
			return
		}
		if m.Event != b[0] {
			t.Fatalf("event %#x from byte %#x", m.Event, b[0])
		}
		_ = m.String()
	})
}

func TestMain(m *testing.M) {
	// The tests need userfaultfd itself; there is nothing to test without.
	if _, _, err := SupportedFeatures(); err != nil {
		os.Stderr.WriteString("userfaultfd unavailable: " + err.Error() + "\n")
		os.Exit(1)
	}
	dir, err := os.MkdirTemp("", "uffd-test")
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		os.Exit(1)
	}
	faulterDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestUnregister(t *testing.T) {
	u := newFD(t, 0)
	r := mapAnon(t, 2)
	if _, err := u.Register(r.page(0), uint64(r.size()), ModeMissing); err != nil {
		t.Fatal(err)
	}
	if err := u.Unregister(r.page(0), uint64(r.size())); err != nil {
		t.Fatal(err)
	}
	var got byte = 1
	done := onThread(func() { got = r.bytes()[pageSize] })
	waitDone(t, done, "reader of an unregistered range")
	if got != 0 {
		t.Errorf("read %d", got)
	}
	if n, _ := u.ReadMsgs(make([]Msg, 1)); n != 0 {
		t.Errorf("%d messages after unregister", n)
	}
}

func TestEnabled(t *testing.T) {
	u, err := New(unix.O_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if f, done, err := u.Enabled(); err != nil || done || f != 0 {
		t.Fatalf("before API: %#x, %v, %v", f, done, err)
	}
	want := FeatureEventFork | FeatureEventUnmap
	if _, _, err := u.API(want); err != nil {
		t.Fatal(err)
	}
	f, done, err := u.Enabled()
	if err != nil || !done || f&want != want {
		t.Fatalf("after API: %s, %v, %v", FeatureNames(f), done, err)
	}
	// Not a userfaultfd at all.
	if _, _, err := FromFd(0).Enabled(); err == nil {
		t.Error("stdin has userfaultfd state")
	}
}

func FuzzParseFdinfo(f *testing.F) {
	f.Add([]byte("pos:\t0\nflags:\t02000000\npending:\t0\ntotal:\t0\nAPI:\taa:80000042:80000000000001ff\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		feat, done, err := parseFdinfo(b)
		if err != nil && (feat != 0 || done) {
			t.Fatal("values returned with an error")
		}
		if feat&featureInitialized != 0 {
			t.Fatal("internal bit leaked into features")
		}
	})
}
