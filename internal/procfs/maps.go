package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
)

// Mapping is one line of /proc/PID/maps (+ VmFlags, Rss and Anon from smaps
// when read via Smaps).
type Mapping struct {
	Start, End                uint64
	Read, Write, Exec, Shared bool // from "rwxp"/"rwxs"
	Offset                    uint64
	Major, Minor              uint32
	Inode                     uint64
	// Path is "" for anonymous memory, a pseudo name ("[heap]", "[stack]",
	// "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]", "[anon:name]", ...)
	// or a file path with the kernel's " (deleted)" suffix removed. The
	// kernel escapes '\n' in file paths as "\012" and escapes nothing else,
	// so the text is ambiguous for odd names and is kept verbatim; use
	// /proc/PID/map_files/START-END to reach the file itself.
	Path string
	// Deleted is set when the kernel appended " (deleted)": the file was
	// unlinked (or a memfd/shmem object). A live file whose name really ends
	// in " (deleted)" looks the same.
	Deleted bool
	// VmFlags are the two-letter flags of smaps ("rd", "wr", "ex", "sh",
	// "mr", "mw", "me", "ms", "gd", "pf", "lo", "io", "sr", "rr", "dc",
	// "de", "ac", "nr", "ht", "nh", "mg", "dd", "sd", "um", "uw", ...).
	// Only Smaps fills it.
	VmFlags []string
	// Rss and Anon are the "Rss:" and "Anonymous:" sizes in bytes. Only
	// Smaps fills them.
	Rss, Anon uint64
}

// Size is the length of the mapping in bytes.
func (m Mapping) Size() uint64 { return m.End - m.Start }

// HasFlag reports whether smaps listed f in VmFlags.
func (m Mapping) HasFlag(f string) bool { return slices.Contains(m.VmFlags, f) }

// Maps reads /proc/PID/maps.
func Maps(pid int) ([]Mapping, error) {
	return readMappings(pid, "maps", parseMaps)
}

// Smaps reads /proc/PID/smaps in one pass. Keys other than Rss, Anonymous
// and VmFlags are skipped, so new kernel keys do not break it.
func Smaps(pid int) ([]Mapping, error) {
	return readMappings(pid, "smaps", parseSmaps)
}

func readMappings(pid int, name string, parse func(io.Reader) ([]Mapping, error)) ([]Mapping, error) {
	f, err := os.Open(path(pid, name))
	if err != nil {
		return nil, fmt.Errorf("procfs: %w", err)
	}
	defer f.Close()
	ms, err := parse(f)
	if err != nil {
		return nil, fmt.Errorf("procfs: %s of %d: %w", name, pid, err)
	}
	return ms, nil
}

// maxLine bounds one line: a path is at most PATH_MAX (4096) bytes, and
// escaping can grow it to 4 bytes per newline; the rest of a line is < 100.
const maxLine = 4*4096 + 256

func newScanner(r io.Reader) *bufio.Scanner {
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 0, 16*1024), maxLine)
	return s
}

func parseMaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	s := newScanner(r)
	for s.Scan() {
		line := s.Bytes()
		if len(line) == 0 {
			continue
		}
		m, err := parseMapsLine(line)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

func parseSmaps(r io.Reader) ([]Mapping, error) {
	var out []Mapping
	s := newScanner(r)
	for s.Scan() {
		line := s.Bytes()
		if len(line) == 0 {
			continue
		}
		key, rest := nextField(line)
		// A header line starts with "start-end"; every other smaps line
		// starts with "Key:".
		if len(key) == 0 || key[len(key)-1] != ':' {
			m, err := parseMapsLine(line)
			if err != nil {
				return nil, err
			}
			out = append(out, m)
			continue
		}
		if len(out) == 0 {
			return nil, malformed("smaps key before any mapping", line)
		}
		m := &out[len(out)-1]
		switch string(key) {
		case "Rss:":
			v, err := parseKB(rest)
			if err != nil {
				return nil, err
			}
			m.Rss = v
		case "Anonymous:":
			v, err := parseKB(rest)
			if err != nil {
				return nil, err
			}
			m.Anon = v
		case "VmFlags:":
			m.VmFlags = parseVmFlags(rest)
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// parseKB parses "   1234 kB" into bytes.
func parseKB(b []byte) (uint64, error) {
	num, rest := nextField(b)
	unit, _ := nextField(rest)
	v, ok := parseDec(num)
	if !ok || string(unit) != "kB" || v > ^uint64(0)>>10 {
		return 0, malformed("smaps size", b)
	}
	return v << 10, nil
}

// knownVmFlags lets parseVmFlags reuse one string per flag instead of
// allocating one per mapping (a big process has thousands of mappings).
var knownVmFlags = func() map[string]string {
	m := map[string]string{}
	for _, f := range []string{"rd", "wr", "ex", "sh", "mr", "mw", "me", "ms", "gd", "pf", "lo", "io",
		"sr", "rr", "dc", "de", "lf", "ac", "nr", "ht", "sf", "ar", "wf", "dd", "bt", "sd", "mm", "hg",
		"nh", "mg", "um", "uw", "ui", "mt", "ss", "sl", "dp"} {
		m[f] = f
	}
	return m
}()

func parseVmFlags(b []byte) []string {
	var flags []string
	for {
		var f []byte
		f, b = nextField(b)
		if len(f) == 0 {
			return flags
		}
		if s, ok := knownVmFlags[string(f)]; ok {
			flags = append(flags, s)
		} else {
			flags = append(flags, string(f))
		}
	}
}

const deletedSuffix = " (deleted)"

// parseMapsLine parses "start-end perms offset major:minor inode   path".
func parseMapsLine(line []byte) (Mapping, error) {
	var m Mapping
	rng, rest := nextField(line)
	lo, hi, ok := bytes.Cut(rng, []byte("-"))
	if !ok {
		return m, malformed("maps range", line)
	}
	var ok1, ok2 bool
	m.Start, ok1 = parseHex(lo)
	m.End, ok2 = parseHex(hi)
	if !ok1 || !ok2 || m.End < m.Start {
		return m, malformed("maps range", line)
	}

	perms, rest := nextField(rest)
	if len(perms) != 4 {
		return m, malformed("maps perms", line)
	}
	m.Read = perms[0] == 'r'
	m.Write = perms[1] == 'w'
	m.Exec = perms[2] == 'x'
	switch perms[3] {
	case 's':
		m.Shared = true
	case 'p':
	default:
		return m, malformed("maps perms", line)
	}

	off, rest := nextField(rest)
	if m.Offset, ok = parseHex(off); !ok {
		return m, malformed("maps offset", line)
	}

	dev, rest := nextField(rest)
	maj, mnr, ok := bytes.Cut(dev, []byte(":"))
	if !ok {
		return m, malformed("maps device", line)
	}
	ma, ok1 := parseHex(maj)
	mi, ok2 := parseHex(mnr)
	if !ok1 || !ok2 || ma > 0xffffffff || mi > 0xffffffff {
		return m, malformed("maps device", line)
	}
	m.Major, m.Minor = uint32(ma), uint32(mi)

	ino, rest := nextField(rest)
	if m.Inode, ok = parseDec(ino); !ok {
		return m, malformed("maps inode", line)
	}

	// The path is everything after the padding; it may contain spaces.
	p := trimBlanks(rest)
	if bytes.HasSuffix(p, []byte(deletedSuffix)) {
		p = p[:len(p)-len(deletedSuffix)]
		m.Deleted = true
	}
	m.Path = string(p)
	return m, nil
}
