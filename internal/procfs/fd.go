package procfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strconv"
)

// Fd is an open descriptor and the readlink of /proc/PID/fd/N, e.g. "/tmp/x",
// "pipe:[123]", "socket:[45]", "anon_inode:[eventfd]", "/dev/null".
type Fd struct {
	Num    int
	Target string
}

// ListFds lists /proc/PID/fd, sorted by Num. A descriptor closed between the
// directory read and its readlink is left out: only a stopped task has a
// stable table.
func ListFds(pid int) ([]Fd, error) {
	dir := path(pid, "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	out := make([]Fd, 0, len(ents))
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		t, err := os.Readlink(dir + "/" + e.Name())
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, fmt.Errorf("procfs: %w", err)
		}
		out = append(out, Fd{Num: n, Target: t})
	}
	slices.SortFunc(out, func(a, b Fd) int { return a.Num - b.Num })
	return out, nil
}

// FdInfo is /proc/PID/fdinfo/N.
type FdInfo struct {
	Pos   int64
	Flags uint32 // octal "flags:" field (includes O_CLOEXEC as the kernel reports it)
	MntID int
	Ino   uint64
	// Lines are all other lines verbatim (eventfd-count, tfd:, inotify wd:,
	// lock:, ...) for the parsers of each file kind.
	Lines []string
}

// ReadFdInfo reads /proc/PID/fdinfo/FD.
func ReadFdInfo(pid, fd int) (*FdInfo, error) {
	p := path(pid, "fdinfo/"+strconv.Itoa(fd))
	b, err := readFile(p)
	if err != nil {
		return nil, err
	}
	fi, err := parseFdInfo(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("procfs: %s: %w", p, err)
	}
	return fi, nil
}

func parseFdInfo(r io.Reader) (*FdInfo, error) {
	fi := &FdInfo{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), 1<<20)
	for s.Scan() {
		line := s.Bytes()
		key, val, _ := bytes.Cut(line, []byte(":"))
		val = bytes.TrimSpace(val)
		var err error
		switch string(key) {
		case "pos":
			fi.Pos, err = strconv.ParseInt(string(val), 10, 64)
		case "flags":
			var v uint64
			v, err = strconv.ParseUint(string(val), 8, 32)
			fi.Flags = uint32(v)
		case "mnt_id":
			fi.MntID, err = strconv.Atoi(string(val))
		case "ino":
			fi.Ino, err = strconv.ParseUint(string(val), 10, 64)
		default:
			if len(line) > 0 {
				fi.Lines = append(fi.Lines, string(line))
			}
		}
		if err != nil {
			return nil, malformedErr("fdinfo "+string(key), err)
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return fi, nil
}
