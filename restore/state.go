package restore

import (
	"encoding/binary"
	"errors"
	"fmt"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/compel"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
)

const ssDisable = 2 // SS_DISABLE

func le64(vals ...uint64) []byte {
	b := make([]byte, 8*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint64(b[8*i:], v)
	}
	return b
}

// restoreSession puts a freshly created task into its dumped session and process group. It runs right
// after the task is created and before it creates its own children, so that they inherit both. A shell
// job (shellJob, the root of a process group in a session outside the images) stays in lazyr's session
// and process group, so that it runs in the foreground of lazyr's terminal as it did in its shell's.
func restoreSession(t *compel.Task, p *plan, shellJob bool, log *zap.Logger) error {
	pid := uint32(p.pid)
	sid, pgid := p.tree.GetSid(), p.tree.GetPgid()
	switch {
	case sid == pid:
		if _, err := t.Syscall(unix.SYS_SETSID); err != nil {
			return fmt.Errorf("setsid: %w", err)
		}
	case pgid == pid && shellJob && p.parent == nil:
	case pgid == pid:
		if _, err := t.Syscall(unix.SYS_SETPGID, 0, 0); err != nil {
			return fmt.Errorf("setpgid: %w", err)
		}
	case p.parent != nil && p.parent.tree.GetSid() == sid:
		// Same session as the parent: join the group (its leader is created before us, being
		// created by a process that comes earlier in the tree).
		if pgid != p.parent.tree.GetPgid() {
			if _, err := t.Syscall(unix.SYS_SETPGID, 0, uint64(pgid)); err != nil {
				return fmt.Errorf("setpgid(%d): %w", pgid, err)
			}
		}
	case p.parent == nil:
		// Joining a session or group of a process outside the image is what --shell-job is about.
		log.Warn("process stays in lazyr's session and process group",
			zap.Uint32("dumped_sid", sid), zap.Uint32("dumped_pgid", pgid))
	default:
		return fmt.Errorf("process %d is in session %d, neither its own nor its parent's: %w", p.pid, sid, ErrUnsupported)
	}
	return nil
}

// restoreName sets the thread's name.
func restoreName(t *compel.Task, comm string) error {
	if len(comm) > 15 {
		comm = comm[:15]
	}
	if comm == "" {
		return nil
	}
	addr, err := t.WriteScratch(0, append([]byte(comm), 0))
	if err != nil {
		return err
	}
	if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_NAME, addr); err != nil {
		return fmt.Errorf("set name: %w", err)
	}
	return nil
}

// restoreSignals installs the signal handlers (shared by all threads).
func restoreSignals(t *compel.Task, p *plan) error {
	// Default dispositions are set too: the stub inherits ignored signals from lazyr's own parent.
	var structs []byte
	var calls []compel.Call
	scratch, _ := t.Scratch()
	for i, sa := range p.core.GetTc().GetSigactions() {
		sig := uint64(i + 1)
		if sig == uint64(unix.SIGKILL) || sig == uint64(unix.SIGSTOP) {
			continue
		}
		calls = append(calls, compel.NewCall(unix.SYS_RT_SIGACTION, sig, scratch+uint64(len(structs)), 0, 8))
		structs = append(structs, le64(sa.GetSigaction(), sa.GetFlags(), sa.GetRestorer(), sa.GetMask())...)
	}
	if len(calls) > 0 {
		if _, err := t.WriteScratch(0, structs); err != nil {
			return err
		}
		if err := t.Batch(calls); err != nil {
			var se *compel.SyscallError
			if errors.As(err, &se) {
				return fmt.Errorf("sigaction %d: %w", calls[se.Index].Args[0], err)
			}
			return err
		}
	}
	return nil
}

// restoreAltStack sets a thread's alternate signal stack.
func restoreAltStack(t *compel.Task, core *criu_core.CoreEntry) error {
	sas := core.GetThreadCore().GetSas()
	if sas != nil && sas.GetSsFlags()&ssDisable == 0 {
		// SS_ONSTACK only reports that the task was running on that stack; it is not a settable flag.
		flags := uint64(sas.GetSsFlags()) &^ 1
		addr, err := t.WriteScratch(0, le64(sas.GetSsSp(), flags, sas.GetSsSize()))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_SIGALTSTACK, addr, 0); err != nil {
			return fmt.Errorf("sigaltstack: %w", err)
		}
	}
	return nil
}

// restoreLimits sets the rlimits. The task may lower a hard limit but not raise it (lazyr has no
// CAP_SYS_RESOURCE on every machine): such a limit is kept as it is and reported.
func restoreLimits(t *compel.Task, p *plan, log *zap.Logger) error {
	var structs []byte
	var calls []compel.Call
	scratch, _ := t.Scratch()
	for res, rl := range p.core.GetTc().GetRlimits().GetRlimits() {
		calls = append(calls, compel.NewCall(unix.SYS_PRLIMIT64, 0, uint64(res), scratch+uint64(len(structs)), 0))
		structs = append(structs, le64(rl.GetCur(), rl.GetMax())...)
	}
	if _, err := t.WriteScratch(0, structs); err != nil {
		return err
	}
	for len(calls) > 0 {
		err := t.Batch(calls)
		if err == nil {
			return nil
		}
		var se *compel.SyscallError
		if !errors.As(err, &se) || !errors.Is(err, unix.EPERM) {
			return fmt.Errorf("prlimit: %w", err)
		}
		res := calls[se.Index].Args[1]
		log.Warn("cannot raise a hard rlimit to its dumped value", zap.Uint64("resource", res))
		calls = calls[se.Index+1:]
	}
	return nil
}

// restoreThreadState restores a thread's own kernel registrations: name, alternate signal stack,
// clear_tid, robust list, pdeath signal, rseq. root says whether the thread belongs to the tree's root,
// whose parent is lazyr itself.
func restoreThreadState(t *compel.Task, core *criu_core.CoreEntry, root bool, opts Options) error {
	tc := core.GetThreadCore()
	if err := restoreName(t, tc.GetComm()); err != nil {
		return err
	}
	if err := restoreAltStack(t, core); err != nil {
		return err
	}
	if _, err := t.Syscall(unix.SYS_SET_TID_ADDRESS, core.GetThreadInfo().GetClearTidAddr()); err != nil {
		return fmt.Errorf("set_tid_address: %w", err)
	}
	if tc.GetFutexRla() != 0 {
		if _, err := t.Syscall(unix.SYS_SET_ROBUST_LIST, tc.GetFutexRla(), uint64(tc.GetFutexRlaLen())); err != nil {
			return fmt.Errorf("set_robust_list: %w", err)
		}
	}
	// The root task's parent is lazyr: a parent-death signal would fire as soon as lazyr exits, so there
	// it is restored only while lazyr stays and waits.
	if sig := tc.GetPdeathSig(); sig != 0 && (!root || !opts.Detached) {
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_PDEATHSIG, uint64(sig)); err != nil {
			return fmt.Errorf("pdeath signal: %w", err)
		}
	}
	if r := tc.GetRseqEntry(); r != nil && r.GetRseqAbiPointer() != 0 {
		if _, err := t.Syscall(unix.SYS_RSEQ, r.GetRseqAbiPointer(), uint64(r.GetRseqAbiSize()), 0, uint64(r.GetSignature())); err != nil {
			return fmt.Errorf("rseq: %w", err)
		}
	}
	return nil
}

// restoreProcessState restores the process-wide registrations: personality, subreaper, THP.
func restoreProcessState(t *compel.Task, p *plan) error {
	if _, err := t.Syscall(unix.SYS_PERSONALITY, uint64(p.core.GetTc().GetPersonality())); err != nil {
		return fmt.Errorf("personality: %w", err)
	}
	if p.core.GetTc().GetChildSubreaper() {
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_CHILD_SUBREAPER, 1); err != nil {
			return fmt.Errorf("child subreaper: %w", err)
		}
	}
	if p.mm.GetThpDisabled() {
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_THP_DISABLE, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("THP disable: %w", err)
		}
	}
	return nil
}

// restoreTimers arms the interval timers; done last, right before the task resumes.
func restoreTimers(t *compel.Task, p *plan) error {
	tm := p.core.GetTc().GetTimers()
	if tm == nil {
		return nil
	}
	for which, it := range []interface {
		GetIsec() uint64
		GetIusec() uint64
		GetVsec() uint64
		GetVusec() uint64
	}{tm.GetReal(), tm.GetVirt(), tm.GetProf()} {
		if it.GetVsec() == 0 && it.GetVusec() == 0 {
			continue
		}
		addr, err := t.WriteScratch(0, le64(it.GetIsec(), it.GetIusec(), it.GetVsec(), it.GetVusec()))
		if err != nil {
			return err
		}
		if _, err := t.Syscall(unix.SYS_SETITIMER, uint64(which), addr, 0); err != nil {
			return fmt.Errorf("setitimer %d: %w", which, err)
		}
	}
	return nil
}

// restoreCreds switches a thread to its dumped ids when they differ from lazyr's (root). This comes after
// everything that needs privileges in the task (PR_SET_MM_MAP, opening files). Credentials are per thread.
func restoreCreds(t *compel.Task, p *plan, core *criu_core.CoreEntry) error {
	c := core.GetThreadCore().GetCreds()
	if c == nil {
		return nil
	}
	if c.GetUid() == 0 && c.GetEuid() == 0 && c.GetSuid() == 0 && c.GetGid() == 0 && c.GetEgid() == 0 && c.GetSgid() == 0 && len(c.GetGroups()) == 0 {
		return nil
	}
	groups := make([]byte, 4*len(c.GetGroups()))
	for i, g := range c.GetGroups() {
		binary.LittleEndian.PutUint32(groups[4*i:], g)
	}
	addr, _ := t.Scratch()
	if len(groups) > 0 {
		var err error
		if addr, err = t.WriteScratch(0, groups); err != nil {
			return err
		}
	}
	if _, err := t.Syscall(unix.SYS_SETGROUPS, uint64(len(c.GetGroups())), addr); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if _, err := t.Syscall(unix.SYS_SETRESGID, uint64(c.GetGid()), uint64(c.GetEgid()), uint64(c.GetSgid())); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	if _, err := t.Syscall(unix.SYS_SETRESUID, uint64(c.GetUid()), uint64(c.GetEuid()), uint64(c.GetSuid())); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	if d := p.mm.GetDumpable(); d >= 0 {
		if _, err := t.Syscall(unix.SYS_PRCTL, unix.PR_SET_DUMPABLE, uint64(d)); err != nil {
			return fmt.Errorf("set dumpable: %w", err)
		}
	}
	return nil
}
