package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
)

// Status is the part of /proc/PID/status the dump needs.
type Status struct {
	Name                       string // unescaped ("\n" and "\\" as the kernel escapes them)
	State                      byte   // 'R', 'S', 'D', 'T', 't', 'Z', 'X', 'I', ...
	Tgid, Pid, PPid, TracerPid int
	Uid, Gid                   [4]uint32 // real, effective, saved, fs
	Groups                     []uint32
	Umask                      uint32
	Threads                    int
	SigPnd, ShdPnd, SigBlk     uint64 // bit N-1 is signal N
	SigIgn, SigCgt             uint64
	CapInh, CapPrm, CapEff     uint64 // bit N is capability N
	CapBnd, CapAmb             uint64
	NoNewPrivs, Seccomp        int
	NSpid, NSpgid, NSsid       []int // outermost namespace first, as seen from the /proc mount's pid namespace
}

// ReadStatus reads /proc/PID/status. The per-thread fields (State, SigPnd,
// SigBlk, credentials, capabilities, Seccomp) are those of thread PID, the
// thread-group leader; use ReadTaskStatus for the other threads.
func ReadStatus(pid int) (*Status, error) {
	return readStatus(path(pid, "status"))
}

// ReadTaskStatus reads /proc/PID/task/TID/status (per-thread signal masks,
// credentials and capabilities).
func ReadTaskStatus(pid, tid int) (*Status, error) {
	return readStatus(taskPath(pid, tid, "status"))
}

func readStatus(p string) (*Status, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	defer f.Close()
	st, err := parseStatus(f)
	if err != nil {
		return nil, fmt.Errorf("procfs: %s: %w", p, err)
	}
	return st, nil
}

func parseStatus(r io.Reader) (*Status, error) {
	st := &Status{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 4096), 1<<20) // Groups can be long (NGROUPS_MAX 65536)
	for s.Scan() {
		key, val, ok := bytes.Cut(s.Bytes(), []byte(":"))
		if !ok {
			continue
		}
		if string(key) == "Name" {
			// Only the kernel's "\t" separator goes: spaces and tabs
			// are legal in a comm.
			st.Name = unescapeName(bytes.TrimPrefix(val, []byte("\t")))
			continue
		}
		val = bytes.Trim(val, " \t")
		var err error
		switch string(key) {
		case "State":
			if len(val) == 0 {
				return nil, malformed("State", val)
			}
			st.State = val[0]
		case "Tgid":
			st.Tgid, err = statusInt(val)
		case "Pid":
			st.Pid, err = statusInt(val)
		case "PPid":
			st.PPid, err = statusInt(val)
		case "TracerPid":
			st.TracerPid, err = statusInt(val)
		case "Threads":
			st.Threads, err = statusInt(val)
		case "NoNewPrivs":
			st.NoNewPrivs, err = statusInt(val)
		case "Seccomp":
			st.Seccomp, err = statusInt(val)
		case "Uid":
			err = statusIDs(val, &st.Uid)
		case "Gid":
			err = statusIDs(val, &st.Gid)
		case "Groups":
			st.Groups, err = statusU32List(val)
		case "Umask":
			var v uint64
			v, err = strconv.ParseUint(string(val), 8, 32)
			st.Umask = uint32(v)
		case "SigPnd":
			st.SigPnd, err = statusHex(val)
		case "ShdPnd":
			st.ShdPnd, err = statusHex(val)
		case "SigBlk":
			st.SigBlk, err = statusHex(val)
		case "SigIgn":
			st.SigIgn, err = statusHex(val)
		case "SigCgt":
			st.SigCgt, err = statusHex(val)
		case "CapInh":
			st.CapInh, err = statusHex(val)
		case "CapPrm":
			st.CapPrm, err = statusHex(val)
		case "CapEff":
			st.CapEff, err = statusHex(val)
		case "CapBnd":
			st.CapBnd, err = statusHex(val)
		case "CapAmb":
			st.CapAmb, err = statusHex(val)
		case "NSpid":
			st.NSpid, err = statusIntList(val)
		case "NSpgid":
			st.NSpgid, err = statusIntList(val)
		case "NSsid":
			st.NSsid, err = statusIntList(val)
		}
		if err != nil {
			return nil, malformedErr("status "+string(key), err)
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return st, nil
}

// unescapeName undoes the escaping of the Name line: the kernel writes the
// task's comm with '\n' as `\n` and '\\' as `\\` (string_escape_str with
// ESCAPE_SPACE|ESCAPE_SPECIAL restricted to "\n\\"); everything else,
// including tabs and spaces, is raw.
func unescapeName(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) {
			switch b[i+1] {
			case 'n':
				out = append(out, '\n')
				i++
				continue
			case '\\':
				out = append(out, '\\')
				i++
				continue
			}
		}
		out = append(out, b[i])
	}
	return string(out)
}

func statusInt(val []byte) (int, error) {
	return strconv.Atoi(string(val))
}

func statusHex(val []byte) (uint64, error) {
	return strconv.ParseUint(string(val), 16, 64)
}

func statusIDs(val []byte, ids *[4]uint32) error {
	f := bytes.Fields(val)
	if len(f) != 4 {
		return fmt.Errorf("want 4 ids, got %d", len(f))
	}
	for i, s := range f {
		v, err := strconv.ParseUint(string(s), 10, 32)
		if err != nil {
			return err
		}
		ids[i] = uint32(v)
	}
	return nil
}

func statusU32List(val []byte) ([]uint32, error) {
	f := bytes.Fields(val)
	out := make([]uint32, 0, len(f))
	for _, s := range f {
		v, err := strconv.ParseUint(string(s), 10, 32)
		if err != nil {
			return nil, err
		}
		out = append(out, uint32(v))
	}
	return out, nil
}

func statusIntList(val []byte) ([]int, error) {
	f := bytes.Fields(val)
	out := make([]int, 0, len(f))
	for _, s := range f {
		v, err := strconv.Atoi(string(s))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
