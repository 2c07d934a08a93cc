package dump

import (
	"fmt"

	core_x86 "github.com/checkpoint-restore/go-criu/v8/crit/images/core-x86"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/creds"
	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
	criu_sa "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-sa"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rlimit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/rseq"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/siginfo"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/timer"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/compel"
	"github.com/lazyr/lazyr/internal/procfs"
	"github.com/lazyr/lazyr/internal/regs"
	"github.com/lazyr/lazyr/internal/sys"
)

// CRIU's task states.
const (
	taskAlive = 1
	taskDead  = 2
)

// procInfo is what /proc and ptrace tell about the task while it is stopped.
type procInfo struct {
	stat     *procfs.Stat
	status   *procfs.Status
	limits   []procfs.Limit
	persona  uint32
	auxv     []uint64
	cwd      string
	root     string
	exe      string
	loginuid uint32
	oomAdj   int
}

// threadInfo is one thread's own state.
type threadInfo struct {
	tid     int
	vtid    int // in the tree's PID namespace
	regs    *core_x86.UserX86RegsEntry
	fpu     *core_x86.UserX86FpregsEntry
	sigmask uint64
	rseq    sys.RseqConfig
	robust  [2]uint64
	comm    string
	nice    int64
	status  *procfs.Status
	inj     *threadInjected
	signals *siginfo.SignalQueueEntry // pending for this thread only
}

// readThread reads a stopped thread's registers and kernel registrations.
// Preconditions: called from Tracer.Do, t seized, with a gadget and a scratch area.
func readThread(pid int, t *compel.Task) (*threadInfo, error) {
	th := &threadInfo{tid: t.Pid, sigmask: t.OrigSigMask()}
	r := t.Regs()
	th.regs = regs.ToImage(&r)
	x, err := t.XState()
	if err != nil {
		return nil, err
	}
	if th.fpu, err = regs.FPUToImage(x); err != nil {
		return nil, err
	}
	if th.rseq, err = t.Rseq(); err != nil {
		return nil, err
	}
	h, l, err := sys.GetRobustList(t.Pid)
	if err != nil {
		return nil, fmt.Errorf("get robust list of %d: %w", t.Pid, err)
	}
	th.robust = [2]uint64{h, l}
	if th.status, err = procfs.ReadTaskStatus(pid, t.Pid); err != nil {
		return nil, err
	}
	th.comm = th.status.Name
	th.vtid = last(th.status.NSpid, t.Pid)
	if th.inj, err = queryThread(t); err != nil {
		return nil, err
	}
	if th.signals, err = pendingSignals(t.Pid, false); err != nil {
		return nil, err
	}
	return th, nil
}

// Preconditions: called from Tracer.Do, t seized.
func readProc(t *compel.Task) (*procInfo, error) {
	pid := t.Pid
	var p procInfo
	var err error
	if p.stat, err = procfs.ReadStat(pid); err != nil {
		return nil, err
	}
	if p.status, err = procfs.ReadStatus(pid); err != nil {
		return nil, err
	}
	if p.limits, err = procfs.ReadLimits(pid); err != nil {
		return nil, err
	}
	if p.persona, err = procfs.Personality(pid); err != nil {
		return nil, err
	}
	if p.auxv, err = procfs.Auxv(pid); err != nil {
		return nil, err
	}
	if p.cwd, err = procfs.Cwd(pid); err != nil {
		return nil, err
	}
	if p.root, err = procfs.Root(pid); err != nil {
		return nil, err
	}
	if p.exe, err = procfs.Exe(pid); err != nil {
		return nil, err
	}
	if p.loginuid, err = procfs.LoginUID(pid); err != nil {
		return nil, err
	}
	if p.oomAdj, err = procfs.OOMScoreAdj(pid); err != nil {
		return nil, err
	}
	return &p, nil
}

func capWords(v uint64) []uint32 { return []uint32{uint32(v), uint32(v >> 32)} }

func itimer(v [4]uint64) *timer.ItimerEntry {
	// struct itimerval: it_interval {sec, usec}, it_value {sec, usec}
	return &timer.ItimerEntry{Isec: proto.Uint64(v[0]), Iusec: proto.Uint64(v[1]), Vsec: proto.Uint64(v[2]), Vusec: proto.Uint64(v[3])}
}

// threadCore assembles the per-thread part of a core image.
func threadCore(p *procInfo, inj *injected, th *threadInfo) *criu_core.ThreadCoreEntry {
	st := th.status
	cr := &creds.CredsEntry{
		Uid: proto.Uint32(st.Uid[0]), Euid: proto.Uint32(st.Uid[1]), Suid: proto.Uint32(st.Uid[2]), Fsuid: proto.Uint32(st.Uid[3]),
		Gid: proto.Uint32(st.Gid[0]), Egid: proto.Uint32(st.Gid[1]), Sgid: proto.Uint32(st.Gid[2]), Fsgid: proto.Uint32(st.Gid[3]),
		CapInh: capWords(st.CapInh), CapPrm: capWords(st.CapPrm), CapEff: capWords(st.CapEff),
		CapBnd: capWords(st.CapBnd), CapAmb: capWords(st.CapAmb),
		Secbits: proto.Uint32(inj.securebits), Groups: st.Groups,
		NoNewPrivs: proto.Uint32(uint32(st.NoNewPrivs)),
	}
	tc := &criu_core.ThreadCoreEntry{
		FutexRla:    proto.Uint64(th.robust[0]),
		FutexRlaLen: proto.Uint32(uint32(th.robust[1])),
		SchedNice:   proto.Int32(int32(p.stat.Nice)),
		BlkSigset:   proto.Uint64(th.sigmask),
		Sas: &criu_core.ThreadSasEntry{
			SsSp: proto.Uint64(th.inj.altstack[0]), SsFlags: proto.Uint32(uint32(th.inj.altstack[1])), SsSize: proto.Uint64(th.inj.altstack[2]),
		},
		PdeathSig: proto.Uint32(th.inj.pdeathSig),
		SignalsP:  th.signals,
		Creds:     cr,
		Comm:      proto.String(th.comm),
	}
	if th.rseq.AbiPointer != 0 {
		tc.RseqEntry = &rseq.RseqEntry{
			RseqAbiPointer: proto.Uint64(th.rseq.AbiPointer),
			RseqAbiSize:    proto.Uint32(th.rseq.AbiSize),
			Signature:      proto.Uint32(th.rseq.Signature),
		}
	}
	return tc
}

// coreEntry assembles core-TID.img of one thread; the leader's also holds the process-wide task core.
func coreEntry(p *procInfo, inj *injected, th *threadInfo, ids *criu_core.TaskKobjIdsEntry, leader bool) *criu_core.CoreEntry {
	ce := &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		ThreadInfo: &core_x86.ThreadInfoX86{
			ClearTidAddr: proto.Uint64(th.inj.clearTid),
			Gpregs:       th.regs,
			Fpregs:       th.fpu,
		},
		ThreadCore: threadCore(p, inj, th),
	}
	if !leader {
		return ce
	}
	var rl []*rlimit.RlimitEntry
	for _, l := range p.limits {
		rl = append(rl, &rlimit.RlimitEntry{Cur: proto.Uint64(l.Cur), Max: proto.Uint64(l.Max)})
	}
	var sas []*criu_sa.SaEntry
	for _, sa := range inj.sigactions {
		sas = append(sas, &criu_sa.SaEntry{
			Sigaction: proto.Uint64(sa[0]), Flags: proto.Uint64(sa[1]),
			Restorer: proto.Uint64(sa[2]), Mask: proto.Uint64(sa[3]),
		})
	}
	ce.Ids = ids
	ce.Tc = &criu_core.TaskCoreEntry{
		TaskState:   proto.Uint32(taskAlive),
		ExitCode:    proto.Uint32(0),
		Personality: proto.Uint32(p.persona),
		Flags:       proto.Uint32(p.stat.Flags),
		BlkSigset:   proto.Uint64(th.sigmask),
		Comm:        proto.String(p.stat.Comm),
		Timers: &timer.TaskTimersEntry{
			Real: itimer(inj.itimers[0]), Virt: itimer(inj.itimers[1]), Prof: itimer(inj.itimers[2]),
		},
		Rlimits:        &criu_core.TaskRlimitsEntry{Rlimits: rl},
		Loginuid:       proto.Uint32(p.loginuid),
		OomScoreAdj:    proto.Int32(int32(p.oomAdj)),
		Sigactions:     sas,
		ChildSubreaper: proto.Bool(inj.subreaper),
	}
	return ce
}

// zombieCore is the core image of a zombie: CRIU's TASK_DEAD with the exit code.
func zombieCore(p *proc) *criu_core.CoreEntry {
	return &criu_core.CoreEntry{
		Mtype: criu_core.CoreEntry_X86_64.Enum(),
		Tc: &criu_core.TaskCoreEntry{
			TaskState:   proto.Uint32(taskDead),
			ExitCode:    proto.Uint32(uint32(p.exitCode)),
			Personality: proto.Uint32(0),
			Flags:       proto.Uint32(0),
			BlkSigset:   proto.Uint64(0),
			Comm:        proto.String(p.stat.Comm),
		},
	}
}
