package procfs

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strconv"
)

// Limit is one resource limit; Cur/Max = ^uint64(0) means unlimited
// (RLIM_INFINITY).
type Limit struct{ Cur, Max uint64 }

// limitNames are the row names of /proc/PID/limits in RLIMIT_* order
// (fs/proc/base.c lnames[]).
var limitNames = [...]string{
	"Max cpu time",          // RLIMIT_CPU
	"Max file size",         // RLIMIT_FSIZE
	"Max data size",         // RLIMIT_DATA
	"Max stack size",        // RLIMIT_STACK
	"Max core file size",    // RLIMIT_CORE
	"Max resident set",      // RLIMIT_RSS
	"Max processes",         // RLIMIT_NPROC
	"Max open files",        // RLIMIT_NOFILE
	"Max locked memory",     // RLIMIT_MEMLOCK
	"Max address space",     // RLIMIT_AS
	"Max file locks",        // RLIMIT_LOCKS
	"Max pending signals",   // RLIMIT_SIGPENDING
	"Max msgqueue size",     // RLIMIT_MSGQUEUE
	"Max nice priority",     // RLIMIT_NICE
	"Max realtime priority", // RLIMIT_RTPRIO
	"Max realtime timeout",  // RLIMIT_RTTIME
}

// ReadLimits parses /proc/PID/limits into RLIMIT_* index order (0..15: CPU
// FSIZE DATA STACK CORE RSS NPROC NOFILE MEMLOCK AS LOCKS SIGPENDING MSGQUEUE
// NICE RTPRIO RTTIME), mapping rows by their names. The values are the raw
// rlimit numbers (seconds for CPU, microseconds for RTTIME, bytes, counts).
func ReadLimits(pid int) ([]Limit, error) {
	p := path(pid, "limits")
	b, err := readFile(p)
	if err != nil {
		return nil, err
	}
	l, err := parseLimits(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("procfs: %s: %w", p, err)
	}
	return l, nil
}

func parseLimits(r io.Reader) ([]Limit, error) {
	out := make([]Limit, len(limitNames))
	var seen [len(limitNames)]bool
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Bytes()
		for i, name := range limitNames {
			// Rows are "%-25s %-20s %-20s %-10s": the name is followed
			// by at least one space.
			if !bytes.HasPrefix(line, []byte(name+" ")) {
				continue
			}
			f := bytes.Fields(line[len(name):])
			if len(f) < 2 {
				return nil, malformed("limits row", line)
			}
			soft, err1 := parseLimit(f[0])
			hard, err2 := parseLimit(f[1])
			if err1 != nil || err2 != nil {
				return nil, malformed("limits row", line)
			}
			out[i] = Limit{Cur: soft, Max: hard}
			seen[i] = true
			break
		}
	}
	if err := s.Err(); err != nil {
		return nil, err
	}
	for i, ok := range seen {
		if !ok {
			return nil, malformed("limits: missing row", limitNames[i])
		}
	}
	return out, nil
}

func parseLimit(b []byte) (uint64, error) {
	if string(b) == "unlimited" {
		return ^uint64(0), nil
	}
	return strconv.ParseUint(string(b), 10, 64)
}
