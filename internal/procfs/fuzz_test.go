package procfs

import (
	"bytes"
	"os"
	"testing"
)

// seedFile adds the first 24 lines of a /proc file as a fuzz seed. Whole
// smaps files are tens of KiB, and the fuzzer spends minutes minimizing
// inputs that big.
func seedFile(f *testing.F, p string) {
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	f.Add(bytes.Join(lines[:min(len(lines), 24)], nil))
}

func FuzzParseSmaps(f *testing.F) {
	seedFile(f, "/proc/self/smaps")
	seedFile(f, "/proc/self/maps")
	f.Add([]byte("1000-2000 rw-p 00000000 00:00 0 [heap]\nRss: 4 kB\nVmFlags: rd wr\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		ms, err := parseSmaps(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, m := range ms {
			if m.End < m.Start || m.Size() != m.End-m.Start || m.Rss%1024 != 0 || m.Anon%1024 != 0 {
				t.Fatalf("inconsistent mapping %+v", m)
			}
		}
		// Every mapping line parses the same through parseMaps.
		plain, err := parseMaps(bytes.NewReader(b))
		if err == nil && len(plain) > len(ms) {
			t.Fatalf("maps found %d mappings, smaps %d", len(plain), len(ms))
		}
	})
}

func FuzzParseStat(f *testing.F) {
	seedFile(f, "/proc/self/stat")
	seedFile(f, "/proc/1/stat")
	f.Add([]byte("1 ((x)) ) S 0 1 1 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 1 1 2 3 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 4 5 6 7 8 9 10 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStat(b)
		if err != nil {
			return
		}
		// The comm is everything between the first '(' and the last ')'.
		if !bytes.Contains(b, []byte("("+st.Comm+")")) {
			t.Fatalf("comm %q not delimited in %q", st.Comm, b)
		}
	})
}

func FuzzParseStatus(f *testing.F) {
	seedFile(f, "/proc/self/status")
	seedFile(f, "/proc/1/status")
	f.Add([]byte("Name:\ta\\nb\nUid:\t0\t0\t0\t0\nGroups:\t1 2\nNSpid:\t5\t1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parseStatus(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(st.Name) > len(b) {
			t.Fatalf("name %q longer than input", st.Name)
		}
	})
}

func FuzzParseMisc(f *testing.F) {
	seedFile(f, "/proc/self/limits")
	seedFile(f, "/proc/self/fdinfo/1")
	seedFile(f, "/proc/self/timers")
	f.Add([]byte("ID: 1\nsignal: 14/0000000000000000\nnotify: signal/pid.5\nClockID: 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if ls, err := parseLimits(bytes.NewReader(b)); err == nil && len(ls) != len(limitNames) {
			t.Fatalf("%d limits", len(ls))
		}
		parseFdInfo(bytes.NewReader(b))
		if ts, err := parseTimers(bytes.NewReader(b)); err == nil {
			for _, tm := range ts {
				if tm.Notify != "" && tm.SigevNotify() < 0 && tm.Notify == "signal" {
					t.Fatalf("bad SigevNotify for %+v", tm)
				}
			}
		}
		if w, err := parseAuxv(b); err == nil && len(w)*8 != len(b) {
			t.Fatalf("auxv %d words from %d bytes", len(w), len(b))
		}
	})
}
