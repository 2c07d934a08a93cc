#!/usr/bin/env bash
# The README's first command (make demo): build lazyr, start a program with 256 MiB of memory that
# re-verifies all of it every tick, checkpoint it, and restore it lazily: it runs again at once, with the
# same PID, while the lazy-pages daemon fills its memory on demand and in the background.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
if [ "$(id -u)" != 0 ]; then
	echo "demo: lazyr needs root (ptrace, clone3 with set_tid, userfaultfd)" >&2
	exit 1
fi
LAZYR=$PWD/bin/lazyr
DEMO=$PWD/demo
rm -rf "$DEMO"
mkdir -p "$DEMO/work"
gcc -O2 -Wall -o "$DEMO/counter" integration/victims/counter.c

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pid=""
daemon=""
cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null || true
}
trap cleanup EXIT

say "lazyr check"
"$LAZYR" check

say "start a program with 256 MiB of memory (it verifies all of it every tick)"
# Detached from this terminal (setsid), stdin from /dev/null, and without fds inherited from whatever
# started this script (lazyr refuses fds it cannot restore, such as a pipe to an outside process).
(
	for f in /proc/$BASHPID/fd/*; do
		n=${f##*/}
		[ "$n" -gt 2 ] && eval "exec $n>&-" 2>/dev/null
	done
	exec setsid "$DEMO/counter" 256 </dev/null >"$DEMO/counter.log" 2>&1
) &
pid=$!
for _ in $(seq 100); do grep -q '^tick 5 ' "$DEMO/counter.log" 2>/dev/null && break; sleep 0.1; done
tail -n 2 "$DEMO/counter.log"

say "lazyr dump -t $pid -D demo/img"
"$LAZYR" dump -t "$pid" -D "$DEMO/img"
before=$(grep -c '^tick' "$DEMO/counter.log")
wait "$pid" 2>/dev/null || true
for _ in $(seq 100); do [ -e "/proc/$pid" ] || break; sleep 0.05; done
echo "process $pid is gone after $before ticks; images:"
"$LAZYR" show --summary "$DEMO/img"

say "lazyr lazy-pages -D demo/img -W demo/work --daemon"
"$LAZYR" lazy-pages -D "$DEMO/img" -W "$DEMO/work" --daemon --pidfile "$DEMO/work/lazy-pages.pid" -o "$DEMO/work/lazy-pages.log"
daemon=$(cat "$DEMO/work/lazy-pages.pid")

say "lazyr restore -D demo/img -W demo/work --lazy-pages -d"
start=${EPOCHREALTIME/./} # microseconds, without forking date(1), which takes milliseconds here
"$LAZYR" restore -D "$DEMO/img" -W "$DEMO/work" --lazy-pages -d --pidfile "$DEMO/restored.pid"
end=${EPOCHREALTIME/./}
echo "restore returned after $(( (end - start) / 1000 )) ms; restored pid $(cat "$DEMO/restored.pid")"
sleep 2
echo "the program goes on where it stopped, with the same pid (the last two ticks before the dump, then tick $before onwards):"
grep '^tick' "$DEMO/counter.log" | sed -n "$((before - 1)),$((before + 3))p"
if grep -q '^FAIL' "$DEMO/counter.log"; then
	echo "demo: the restored program found its memory corrupted" >&2
	exit 1
fi
for _ in $(seq 100); do [ -e "/proc/$daemon" ] || break; sleep 0.1; done
say "lazy-pages statistics (demo/work/lazy-pages-stats.json)"
cat "$DEMO/work/lazy-pages-stats.json"
say "done: the restored program is still running as pid $pid; stopping it"
