package procfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strconv"
)

// Auxv returns /proc/PID/auxv as u64 words: (type, value) pairs including the
// terminating AT_NULL pair.
func Auxv(pid int) ([]uint64, error) {
	p := path(pid, "auxv")
	b, err := readFile(p)
	if err != nil {
		return nil, err
	}
	w, err := parseAuxv(b)
	if err != nil {
		return nil, fmt.Errorf("procfs: %s: %w", p, err)
	}
	return w, nil
}

func parseAuxv(b []byte) ([]uint64, error) {
	if len(b)%16 != 0 {
		return nil, malformed("auxv length", len(b))
	}
	w := make([]uint64, len(b)/8)
	for i := range w {
		w[i] = binary.NativeEndian.Uint64(b[i*8:])
	}
	return w, nil
}

// Personality reads /proc/PID/personality (hex).
func Personality(pid int) (uint32, error) {
	v, err := readNumber(path(pid, "personality"), 16, 32)
	return uint32(v), err
}

// Cwd is the readlink of /proc/PID/cwd.
func Cwd(pid int) (string, error) { return readLink(path(pid, "cwd")) }

// Root is the readlink of /proc/PID/root.
func Root(pid int) (string, error) { return readLink(path(pid, "root")) }

// Exe is the readlink of /proc/PID/exe (with " (deleted)" if the binary was
// unlinked).
func Exe(pid int) (string, error) { return readLink(path(pid, "exe")) }

// Tasks lists the thread IDs in /proc/PID/task, sorted.
func Tasks(pid int) ([]int, error) {
	ents, err := os.ReadDir(path(pid, "task"))
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	out := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Children reads /proc/PID/task/TID/children: the children whose parent is
// this thread (a child belongs to the thread that forked it), in the kernel's
// list order.
func Children(pid, tid int) ([]int, error) {
	p := taskPath(pid, tid, "children")
	b, err := readFile(p)
	if err != nil {
		return nil, err
	}
	f := bytes.Fields(b)
	out := make([]int, 0, len(f))
	for _, s := range f {
		n, err := strconv.Atoi(string(s))
		if err != nil {
			return nil, fmt.Errorf("procfs: %s: %w", p, malformedErr("child pid", err))
		}
		out = append(out, n)
	}
	return out, nil
}

// Comm reads /proc/PID/comm (raw, without the trailing newline).
func Comm(pid int) (string, error) {
	b, err := readFile(path(pid, "comm"))
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSuffix(b, []byte("\n"))), nil
}

// LoginUID reads /proc/PID/loginuid (4294967295 when unset).
func LoginUID(pid int) (uint32, error) {
	v, err := readNumber(path(pid, "loginuid"), 10, 32)
	return uint32(v), err
}

// OOMScoreAdj reads /proc/PID/oom_score_adj (-1000..1000).
func OOMScoreAdj(pid int) (int, error) {
	p := path(pid, "oom_score_adj")
	b, err := readFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0, fmt.Errorf("procfs: %s: %w", p, malformedErr("value", err))
	}
	return v, nil
}

// readNumber reads a file holding one unsigned number.
func readNumber(p string, base, bits int) (uint64, error) {
	b, err := readFile(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(b)), base, bits)
	if err != nil {
		return 0, fmt.Errorf("procfs: %s: %w", p, malformedErr("value", err))
	}
	return v, nil
}
