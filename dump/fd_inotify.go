package dump

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fh"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/fsnotify"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// maxHandleSize is the kernel's MAX_HANDLE_SZ.
const maxHandleSize = 128

// fhMinWords is CRIU's FH_ENTRY_SIZES__min_entries: f_handle.handle always has at least this many words.
const fhMinWords = 16

// inotifyKind: an inotify instance and its watches, from fdinfo "inotify wd:" lines. Each watch names its
// inode by a file handle; the handle is opened (open_by_handle_at on a mount of that device) to find the
// path, which goes into the image next to the handle: a restore adds the watch again by path. Events
// queued but not read yet are not kept.
type inotifyKind struct{}

func init() { registerFdKind(inotifyKind{}) }

func (inotifyKind) handles(f *openFile) bool { return f.Fd.Target == "anon_inode:inotify" }

func (inotifyKind) dump(ft *fileTable, f *openFile, id uint32) (*fdinfo.FileEntry, error) {
	wds, err := parseInotify(f.Info.Lines)
	if err != nil {
		return nil, err
	}
	for _, w := range wds {
		w.Id = proto.Uint32(id)
		path, err := handlePath(f.Pid, w.GetSDev(), w.GetFHandle())
		if err != nil {
			return nil, fmt.Errorf("inotify watch %d (inode %d): %w", w.GetWd(), w.GetIIno(), err)
		}
		w.FHandle.Path = proto.String(path)
	}
	return &fdinfo.FileEntry{
		Type: fdinfo.FdTypes_INOTIFY.Enum(),
		Id:   proto.Uint32(id),
		Ify:  &fsnotify.InotifyFileEntry{Id: proto.Uint32(id), Flags: proto.Uint32(f.Flags), Fown: zeroFown(), Wd: wds},
	}, nil
}

// parseInotify reads fs/notify/fdinfo.c's lines (all numbers hex, the handle as hex bytes):
//
//	inotify wd:2 ino:263 sdev:fe00000 mask:2 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:6302000000000000
func parseInotify(lines []string) ([]*fsnotify.InotifyWdEntry, error) {
	var out []*fsnotify.InotifyWdEntry
	for _, l := range lines {
		if !strings.HasPrefix(l, "inotify wd:") {
			continue
		}
		f := fdinfoFields(l)
		var v [7]uint64
		for i, key := range []string{"wd", "ino", "sdev", "mask", "ignored_mask", "fhandle-bytes", "fhandle-type"} {
			n, err := fieldUint(f, key, 16)
			if err != nil {
				// A handle the filesystem could not encode leaves the fhandle fields out.
				return nil, fmt.Errorf("inotify fdinfo %q: %w", l, err)
			}
			v[i] = n
		}
		if v[0] > 1<<31 || v[2] > 1<<32-1 || v[3] > 1<<32-1 || v[4] > 1<<32-1 || v[5] > maxHandleSize || v[6] > 1<<31 {
			return nil, fmt.Errorf("inotify fdinfo %q: value out of range", l)
		}
		raw, err := hex.DecodeString(f["f_handle"])
		if err != nil || len(raw) != int(v[5]) {
			return nil, fmt.Errorf("inotify fdinfo %q: handle of %d bytes expected", l, v[5])
		}
		out = append(out, &fsnotify.InotifyWdEntry{
			Wd: proto.Uint32(uint32(v[0])), IIno: proto.Uint64(v[1]), SDev: proto.Uint32(uint32(v[2])),
			Mask: proto.Uint32(uint32(v[3])), IgnoredMask: proto.Uint32(uint32(v[4])),
			FHandle: &fh.FhEntry{Bytes: proto.Uint32(uint32(v[5])), Type: proto.Uint32(uint32(v[6])), Handle: handleWords(raw)},
		})
	}
	return out, nil
}

// handleWords packs handle bytes into CRIU's little-endian u64 words, at least fhMinWords of them.
func handleWords(b []byte) []uint64 {
	n := max((len(b)+7)/8, fhMinWords)
	padded := make([]byte, 8*n)
	copy(padded, b)
	w := make([]uint64, n)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(padded[8*i:])
	}
	return w
}

// handleBytes is the inverse of handleWords.
func handleBytes(e *fh.FhEntry) ([]byte, error) {
	n := int(e.GetBytes())
	if n > maxHandleSize || n > 8*len(e.GetHandle()) {
		return nil, fmt.Errorf("file handle of %d bytes in %d words", n, len(e.GetHandle()))
	}
	b := make([]byte, 8*len(e.GetHandle()))
	for i, w := range e.GetHandle() {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b[:n], nil
}

// handlePath opens a file handle of the filesystem with kernel dev_t sdev (major<<20 | minor) through a
// mount of it seen by the task, and returns the path of what it opened.
func handlePath(pid int, sdev uint32, e *fh.FhEntry) (string, error) {
	b, err := handleBytes(e)
	if err != nil {
		return "", err
	}
	mnt, err := mountOfDev(pid, sdev>>20, sdev&0xfffff)
	if err != nil {
		return "", err
	}
	// Not O_PATH: open_by_handle_at does not take an O_PATH mount fd (EBADF).
	mfd, err := unix.Open(mnt, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("open mount %s: %w", mnt, err)
	}
	defer unix.Close(mfd)
	fd, err := unix.OpenByHandleAt(mfd, unix.NewFileHandle(int32(e.GetType()), b), unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return "", fmt.Errorf("open_by_handle_at on %s: %w", mnt, err)
	}
	defer unix.Close(fd)
	path, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd))
	if err != nil {
		return "", err
	}
	if strings.HasSuffix(path, " (deleted)") || !strings.HasPrefix(path, "/") {
		return "", fmt.Errorf("watched file %q has no path: %w", path, ErrUnsupported)
	}
	return path, nil
}

// mountOfDev finds a mount point of device major:minor in the task's mountinfo, preferring a mount of
// the filesystem's root (a bind mount of a subdirectory cannot reach every inode).
func mountOfDev(pid int, major, minor uint32) (string, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		return "", err
	}
	defer f.Close()
	mounts, err := parseMountinfo(f)
	if err != nil {
		return "", err
	}
	want := fmt.Sprintf("%d:%d", major, minor)
	found := ""
	for _, m := range mounts {
		if m.dev != want {
			continue
		}
		if m.root == "/" {
			return m.point, nil
		}
		if found == "" {
			found = m.point
		}
	}
	if found == "" {
		return "", fmt.Errorf("no mount of device %s: %w", want, ErrUnsupported)
	}
	return found, nil
}

type mountInfo struct{ dev, root, point string }

// parseMountinfo reads the fields lazyr needs from /proc/PID/mountinfo: "36 35 98:0 /root /point ...".
func parseMountinfo(r io.Reader) ([]mountInfo, error) {
	var out []mountInfo
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) < 5 {
			return nil, fmt.Errorf("mountinfo line %q: too few fields", s.Text())
		}
		out = append(out, mountInfo{dev: f[2], root: unescapeOctal(f[3]), point: unescapeOctal(f[4])})
	}
	return out, s.Err()
}

// unescapeOctal undoes the kernel's \ooo escaping of spaces, tabs, newlines and backslashes in paths.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
