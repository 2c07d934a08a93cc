// Package procfs parses the /proc files the dump side reads about a live
// task: maps and smaps, pagemap, status, stat, limits, fd and fdinfo, auxv,
// timers and a few one-value files.
//
// Every reader is a thin wrapper that opens /proc/PID/<file> and hands the
// bytes to an internal parser that takes an io.Reader or []byte, so the
// parsers can be fuzzed without a process. Parsers return ErrMalformed (plus
// context) instead of panicking on short or garbled lines.
//
// A missing /proc/PID (the task is gone) surfaces as the *fs.PathError of the
// open, so errors.Is(err, fs.ErrNotExist) holds and callers can say "no such
// process". Reading another task's maps, pagemap, auxv, personality, timers,
// fdinfo or stat code bounds needs ptrace-read access to it; the kernel
// answers EACCES/EPERM (or zeroes, for stat and pagemap PFNs) without it.
//
// Values are read at one instant and may be stale immediately unless the task
// is stopped; /proc gives no snapshot across files.
package procfs
