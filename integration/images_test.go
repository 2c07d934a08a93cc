package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/checkpoint-restore/go-criu/v8/crit"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"

	"github.com/lazyr/lazyr/internal/testutil"
)

// TestImagesDecodeWithCrit dumps a victim and checks that go-criu's crit
// reads every image lazyr wrote (pages-*.img is raw page data, not
// protobuf), and that crit's own explorers see the victim as it was.
func TestImagesDecodeWithCrit(t *testing.T) {
	testutil.RequireRoot(t)
	v := testutil.StartVictim(t, testutil.BuildVictim(t, "counter"), "8")
	start := v.WaitOutput(regexp.MustCompile(`start pid=\d+ mib=8 addr=0x([0-9a-f]+) size=(\d+)`), outputTimeout)
	addr, _ := strconv.ParseUint(start[1], 16, 64)
	size, _ := strconv.ParseUint(start[2], 10, 64)
	v.WaitOutput(lineRe(`^tick 2\b`), outputTimeout)
	dir := t.TempDir()
	dumpKill(t, v, dir)

	paths, err := filepath.Glob(filepath.Join(dir, "*.img"))
	if err != nil {
		t.Fatal(err)
	}
	decoded := map[string]*crit.CriuImage{}
	for _, p := range paths {
		name := filepath.Base(p)
		if strings.HasPrefix(name, "pages-") {
			continue
		}
		img, err := decodeImage(p)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		decoded[name] = img
		t.Logf("%s: %s, %d entries", name, img.Magic, len(img.Entries))
	}
	for _, name := range []string{"inventory.img", "pstree.img", fmt.Sprintf("core-%d.img", v.Pid),
		fmt.Sprintf("mm-%d.img", v.Pid), fmt.Sprintf("pagemap-%d.img", v.Pid)} {
		if decoded[name] == nil {
			t.Errorf("no decodable %s among %d images", name, len(decoded))
		}
	}

	// crit's explorers walk pstree, core, ids, fdinfo, files, fs and mm.
	c := crit.New(nil, nil, dir, false, false)
	ps, err := c.ExplorePs()
	if err != nil {
		t.Fatalf("crit ExplorePs: %v", err)
	}
	if ps == nil {
		t.Fatal("crit ExplorePs: no root process")
	}
	if ps.PID != uint32(v.Pid) || ps.SID != uint32(v.Pid) || ps.PgID != uint32(v.Pid) || ps.Comm != "counter" || len(ps.Children) != 0 {
		t.Errorf("crit ExplorePs root: pid %d sid %d pgid %d comm %q, %d children; want pid=sid=pgid=%d comm counter, no children",
			ps.PID, ps.SID, ps.PgID, ps.Comm, len(ps.Children), v.Pid)
	}
	fds, err := c.ExploreFds()
	if err != nil {
		t.Fatalf("crit ExploreFds: %v", err)
	}
	wantFds := map[string]string{"0": "/dev/null", "1": v.OutputFile, "2": v.OutputFile}
	for _, pf := range fds {
		if pf.PId != uint32(v.Pid) {
			continue
		}
		for _, f := range pf.Files {
			if want, ok := wantFds[f.Fd]; ok {
				if f.Path != want {
					t.Errorf("crit: fd %s is %q, want %q", f.Fd, f.Path, want)
				}
				delete(wantFds, f.Fd)
			}
		}
	}
	if len(wantFds) != 0 {
		t.Errorf("crit ExploreFds lacks fds %v: %+v", wantFds, fds)
	}
	mems, err := c.ExploreMems()
	if err != nil {
		t.Fatalf("crit ExploreMems: %v", err)
	}
	found := false
	for _, mm := range mems {
		for _, m := range mm.Mems {
			lo, _ := strconv.ParseUint(m.Start, 16, 64)
			hi, _ := strconv.ParseUint(m.End, 16, 64)
			if lo <= addr && addr+size <= hi {
				found = true
				if m.Protection != "rw-" {
					t.Errorf("counter area %#x-%#x has protection %s, want rw-", lo, hi, m.Protection)
				}
			}
		}
	}
	if !found {
		t.Errorf("no VMA covers the counter area %#x+%#x", addr, size)
	}

	// The pagemap describes exactly the pages in pages-<id>.img, and those
	// include the whole (touched) counter area.
	pm := decoded[fmt.Sprintf("pagemap-%d.img", v.Pid)]
	if pm == nil {
		t.FailNow()
	}
	head, ok := pm.Entries[0].Message.(*pagemap.PagemapHead)
	if !ok {
		t.Fatalf("pagemap head is %T", pm.Entries[0].Message)
	}
	var pages, inArea uint64
	for _, e := range pm.Entries[1:] {
		pe := e.Message.(*pagemap.PagemapEntry)
		n := pe.GetNrPages()
		if n == 0 {
			n = uint64(pe.GetCompatNrPages())
		}
		// Pages in a parent image, or flagged but not present, are not in
		// this pages file. Flag bits as in CRIU: 1 parent, 2 lazy, 4 present.
		if pe.GetInParent() || pe.GetFlags()&1 != 0 || (pe.Flags != nil && pe.GetFlags()&4 == 0) {
			continue
		}
		pages += n
		lo, hi := pe.GetVaddr(), pe.GetVaddr()+n*4096
		if hi > addr && lo < addr+size {
			inArea += (min(hi, addr+size) - max(lo, addr)) / 4096
		}
	}
	st, err := os.Stat(filepath.Join(dir, fmt.Sprintf("pages-%d.img", head.GetPagesId())))
	if err != nil {
		t.Fatalf("pages image named by the pagemap head: %v", err)
	}
	if uint64(st.Size()) != pages*4096 {
		t.Errorf("pages-%d.img has %d bytes, pagemap lists %d pages (%d bytes)", head.GetPagesId(), st.Size(), pages, pages*4096)
	}
	if inArea != size/4096 {
		t.Errorf("pagemap covers %d of the %d pages of the counter area", inArea, size/4096)
	}
	t.Logf("%d pages dumped, %d MiB image", pages, st.Size()>>20)

	// lazyr show: JSON for a directory and for a single file, and a summary.
	out, stderr, code := testutil.Lazyr(t, "show", dir)
	if code != 0 || !json.Valid([]byte(out)) {
		t.Errorf("lazyr show DIR: exit %d, valid JSON %v\nstderr: %s\nstdout: %s", code, json.Valid([]byte(out)), stderr, testutil.Tail(out, 10))
	}
	out, stderr, code = testutil.Lazyr(t, "show", filepath.Join(dir, fmt.Sprintf("core-%d.img", v.Pid)))
	if code != 0 || !json.Valid([]byte(out)) || !strings.Contains(out, "counter") {
		t.Errorf("lazyr show core: exit %d, valid JSON %v\nstderr: %s\nstdout: %s", code, json.Valid([]byte(out)), stderr, testutil.Tail(out, 10))
	}
	out, stderr, code = testutil.Lazyr(t, "show", "--summary", dir)
	if code != 0 || !strings.Contains(out, strconv.Itoa(v.Pid)) {
		t.Errorf("lazyr show --summary: exit %d, want the pid %d in:\n%s\nstderr: %s", code, v.Pid, out, stderr)
	}
}

// TestCheck runs `lazyr check`: everything lazyr needs is on this kernel.
func TestCheck(t *testing.T) {
	testutil.RequireRoot(t)
	start := time.Now()
	out, stderr, code := testutil.Lazyr(t, "check")
	if code != 0 {
		t.Errorf("lazyr check: exit %d\nstdout: %s\nstderr: %s", code, out, stderr)
	}
	t.Logf("lazyr check took %v", time.Since(start))
}
