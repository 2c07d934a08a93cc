package procfs

import (
	"bytes"
	"fmt"
	"strconv"
)

// Stat is the part of /proc/PID/stat the dump needs. Unless the reader may
// ptrace-read the task, the kernel hides the memory layout: StartCode and
// EndCode read as 1 and StartStack, the data/brk/arg/env bounds and ExitCode
// as 0.
type Stat struct {
	Pid                                int
	Comm                               string
	State                              byte
	PPid, Pgrp, Session, TtyNr         int
	Flags                              uint32 // PF_* flags
	Nice                               int64
	NumThreads                         int
	StartTime                          uint64 // clock ticks after boot
	StartCode, EndCode, StartStack     uint64
	ExitSignal                         int
	StartData, EndData, StartBrk       uint64
	ArgStart, ArgEnd, EnvStart, EnvEnd uint64
	ExitCode                           int
}

// ReadStat reads /proc/PID/stat.
func ReadStat(pid int) (*Stat, error) {
	p := path(pid, "stat")
	b, err := readFile(p)
	if err != nil {
		return nil, err
	}
	st, err := parseStat(b)
	if err != nil {
		return nil, fmt.Errorf("procfs: %s: %w", p, err)
	}
	return st, nil
}

// statFields is the number of fields after "pid (comm)" that Linux ≥ 3.5
// prints (fields 3..52 of proc(5)).
const statFields = 50

func parseStat(b []byte) (*Stat, error) {
	// comm is raw and may hold spaces, '(' and ')': it ends at the LAST ')'.
	open := bytes.IndexByte(b, '(')
	closing := bytes.LastIndexByte(b, ')')
	if open < 0 || closing < open {
		return nil, malformed("stat comm", b)
	}
	st := &Stat{Comm: string(b[open+1 : closing])}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return nil, malformedErr("stat pid", err)
	}
	st.Pid = pid

	f := bytes.Fields(b[closing+1:])
	if len(f) < statFields {
		return nil, malformed("stat: too few fields", b)
	}
	if len(f[0]) != 1 {
		return nil, malformed("stat state", f[0])
	}
	st.State = f[0][0]

	// Field numbers below are those of proc(5); f[i] is field i+3.
	p := statParser{f: f}
	st.PPid = p.int(4)
	st.Pgrp = p.int(5)
	st.Session = p.int(6)
	st.TtyNr = p.int(7)
	st.Flags = uint32(p.uint(9, 32))
	st.Nice = int64(p.int(19))
	st.NumThreads = p.int(20)
	st.StartTime = p.uint(22, 64)
	st.StartCode = p.uint(26, 64)
	st.EndCode = p.uint(27, 64)
	st.StartStack = p.uint(28, 64)
	st.ExitSignal = p.int(38)
	st.StartData = p.uint(45, 64)
	st.EndData = p.uint(46, 64)
	st.StartBrk = p.uint(47, 64)
	st.ArgStart = p.uint(48, 64)
	st.ArgEnd = p.uint(49, 64)
	st.EnvStart = p.uint(50, 64)
	st.EnvEnd = p.uint(51, 64)
	st.ExitCode = p.int(52)
	if p.err != nil {
		return nil, p.err
	}
	return st, nil
}

// statParser parses numbered stat fields and keeps the first error.
type statParser struct {
	f   [][]byte
	err error
}

func (p *statParser) int(field int) int {
	v, err := strconv.Atoi(string(p.f[field-3]))
	if err != nil && p.err == nil {
		p.err = malformedErr(fmt.Sprintf("stat field %d", field), err)
	}
	return v
}

func (p *statParser) uint(field, bits int) uint64 {
	v, err := strconv.ParseUint(string(p.f[field-3]), 10, bits)
	if err != nil && p.err == nil {
		p.err = malformedErr(fmt.Sprintf("stat field %d", field), err)
	}
	return v
}
