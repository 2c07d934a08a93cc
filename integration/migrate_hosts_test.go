package integration

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lazyr/lazyr/internal/testutil"
)

// migratePort is the page server's port inside the test's own network namespaces.
const migratePort = "27027"

// counterPid1TickRe matches the ticks of a counter that is the init of its PID namespace.
var counterPid1TickRe = regexp.MustCompile(`(?m)^tick (\d+) sum=[0-9a-f]{16} pid=1$`)

// TestMigrateBetweenHosts: post-copy migration between two "hosts" (network namespaces joined by a
// veth pair). The victim runs on the source as the init of its own PID namespace; `lazyr dump
// --lazy-pages` there writes everything but its memory and serves that memory while the victim stays
// frozen; on the destination `lazyr lazy-pages --page-server` fetches the images and `lazyr restore
// --lazy-pages` brings the victim back (in a fresh PID namespace, so its pid cannot clash with the
// frozen original's). Once the destination has every page, the source is killed. The victim must go
// on verifying all of its memory on the destination, tick after tick, without a gap or a repeat.
func TestMigrateBetweenHosts(t *testing.T) {
	testutil.RequireRoot(t)
	t.Run("plain", func(t *testing.T) { testMigrateBetweenHosts(t, false) })
	t.Run("tls", func(t *testing.T) { testMigrateBetweenHosts(t, true) })
}

// testMigrateBetweenHosts migrates, with --tls on both sides (mutual authentication) or without.
func testMigrateBetweenHosts(t *testing.T, withTLS bool) {
	src, dst, srcNS, dstNS := netnsPair(t)
	var srcTLS, dstTLS []string
	if withTLS {
		p := newPKI(t, srcAddr, dstAddr)
		srcTLS, dstTLS = p.serverArgs(), p.clientArgs()
	}
	counter := testutil.BuildVictim(t, "counter")
	v, pid := startPidnsVictim(t, src, counter, "64")
	v.WaitOutput(lineRe(`^tick 2\b`), outputTimeout)

	srcDir, dstDir, work := t.TempDir(), filepath.Join(t.TempDir(), "img"), t.TempDir()
	testutil.BuildLazyr(t) // not in the times below
	start := time.Now()
	source := startBg(t, src, append([]string{"dump", "-t", strconv.Itoa(pid), "-D", srcDir, "--lazy-pages", "--address", srcAddr, "--port", migratePort}, srcTLS...)...)
	t.Logf("source frozen and serving after %v", time.Since(start))
	if warned := regexp.MustCompile(`(?i)warning.*not encrypted`).MatchString(source.errText()); warned == withTLS {
		t.Errorf("plaintext warning %v with TLS %v on %s; stderr:\n%s", warned, withTLS, srcAddr, source.errText())
	}
	frozen := v.Output()
	last := lastNumber(t, frozen, counterPid1TickRe)
	if procStatusField(t, pid, "TracerPid") == "0" {
		t.Fatalf("source %d is not held by the dump while its memory is served", pid)
	}

	lazyr(t, dst, append([]string{"lazy-pages", "--page-server", "--address", srcAddr, "--port", migratePort, "-D", dstDir, "-W", work, "--daemon"}, dstTLS...)...)
	requireFetchedImages(t, dstDir, 1, counterPages(64), 256)
	rpid := restoreLazy(t, dst, dstDir, work)
	t.Logf("destination running after %v", time.Since(start))
	if !sameNetns(t, rpid, dstNS) || sameNetns(t, rpid, srcNS) {
		t.Errorf("restored pid %d is not in the destination's network namespace", rpid)
	}
	if _, err := testutil.WaitOutputFile(v.OutputFile, lineRe(`^verified %d$`, last+3), outputTimeout); err != nil {
		t.Fatal(err)
	}
	// Done reached the source: it killed the original and exited.
	source.requireExit(0, 30*time.Second)
	if err := testutil.WaitPidGone(pid, goneTimeout); err != nil {
		t.Fatal(err)
	}
	st := lazyPagesStats(t, work)
	if got := st.PagesByFault + st.PagesByPrefetch; got < counterPages(64) {
		t.Errorf("the daemon copied %d pages, want at least %d", got, counterPages(64))
	}
	if !testutil.PidAlive(rpid) {
		t.Fatalf("the migrated counter is gone:\n%s", testutil.Tail(v.Output(), 10))
	}
	out := v.Output()
	if !strings.HasPrefix(out, frozen) {
		t.Fatalf("the destination's output does not continue the source's:\n%s", testutil.Tail(out, 10))
	}
	requireNoFail(t, out)
	requireConsecutive(t, "tick", numbers(t, out, counterPid1TickRe), 0, last+3)
	requireConsecutive(t, "verified", numbers(t, out, regexp.MustCompile(`(?m)^verified (\d+)$`)), 0, last+3)
	if n := len(counterTickRe.FindAllString(out, -1)); n != len(counterPid1TickRe.FindAllString(out, -1)) {
		t.Errorf("ticks printed by another pid than 1 (its own namespace's)")
	}
}
