package integration

import (
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/lazyr/lazyr/internal/testutil"
)

// TestTreePidNamespace: a container-like tree, the ring (4 processes passing a token through pipes, one
// in a process group of its own, and an unreaped zombie that exited with 42) running as the init of its
// own PID namespace, is dumped and restored eagerly and lazily into a fresh PID namespace: inside it the
// pids are the dumped ones (the root is 1 again), the token goes on growing by exactly 4 per member, every
// member's parent is still the root, and the root can still reap its zombie and get 42.
func TestTreePidNamespace(t *testing.T) {
	testutil.RequireRoot(t)
	bin := testutil.BuildVictim(t, "ring")
	const n = 4
	tokens := regexp.MustCompile(`(?m)^ring \d+ pid=\d+ ppid=\d+ pgid=\d+ token (\d+)$`)
	for _, lazy := range []bool{false, true} {
		t.Run(mode(lazy), func(t *testing.T) {
			trigger := filepath.Join(t.TempDir(), "reap")
			v, pid := startPidnsVictim(t, nil, bin, fmt.Sprint(n), trigger)
			head := v.WaitOutput(regexp.MustCompile(`(?m)^ring root=1 n=4 zombie=(\d+)$`), outputTimeout)
			zombie := head[1]
			v.WaitOutput(lineRe(`^ring \d+ .* token %d$`, 3*n), outputTimeout)
			dir := t.TempDir()
			dump(t, pid, dir)
			if err := testutil.WaitPidGone(pid, goneTimeout); err != nil {
				t.Fatal(err)
			}
			before := v.Output()
			last := lastNumber(t, before, tokens)

			root := restoreOutside(t, dir, lazy)
			if ns := procStatusField(t, root, "NSpid"); !strings.HasSuffix(ns, "\t1") && !strings.HasSuffix(ns, " 1") {
				t.Errorf("restored root has NSpid %q, want pid 1 in its own namespace", ns)
			}
			if _, err := testutil.WaitPidOutput(root, v.OutputFile, lineRe(`^ring \d+ .* token %d$`, last+2*n), outputTimeout); err != nil {
				t.Fatalf("restored ring: %v\n%s", err, testutil.Tail(v.Output(), 10))
			}
			lzTouch(t, trigger)
			m, err := testutil.WaitPidOutput(root, v.OutputFile, lineRe(`^reaped zombie=%s exited=(\d) status=(\d+)$`, zombie), outputTimeout)
			if err != nil {
				t.Fatalf("restored root did not reap its zombie: %v\n%s", err, testutil.Tail(v.Output(), 10))
			}
			if m[1] != "1" || m[2] != "42" {
				t.Errorf("root reaped its zombie: exited=%s status=%s, want exited=1 status=42", m[1], m[2])
			}
			if _, err := testutil.WaitPidOutput(root, v.OutputFile, lineRe(`^ring \d+ .* token %d$`, last+4*n), outputTimeout); err != nil {
				t.Fatalf("ring after the reap: %v", err)
			}
			out := v.Output()
			requireNoFail(t, out)
			// Inside the namespace every member keeps its pid, its parent (the root, 1) and its group.
			lines := treeRingLine.FindAllStringSubmatch(out, -1)
			seen := map[string]string{}
			for _, l := range lines {
				key := l[1]
				if key == "0" { // the root itself
					if l[2] != "1" {
						t.Fatalf("the root prints pid %s, want 1: %q", l[2], l[0])
					}
					continue
				}
				if l[3] != "1" {
					t.Fatalf("member %s has parent %s, want the root 1: %q", key, l[3], l[0])
				}
				if was, ok := seen[key]; ok && was != l[2]+"/"+l[4] {
					t.Fatalf("member %s changed pid/pgid from %s to %s/%s", key, was, l[2], l[4])
				}
				seen[key] = l[2] + "/" + l[4]
			}
			if len(seen) != n-1 {
				t.Errorf("saw members %v, want %d", seen, n-1)
			}
		})
	}
}
