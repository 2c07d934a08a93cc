package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// VictimCFlags are the gcc flags every victim is built with, before any
// extra flags. Dynamic linking against glibc is the default on purpose: it
// is the realistic case (ld.so, libc mappings, vDSO use, TLS).
var VictimCFlags = []string{"-O2", "-g", "-Wall", "-Wextra", "-pthread"}

// ModuleRoot returns the directory holding the lazyr go.mod, found by walking
// up from the working directory (go test runs tests in their package folder).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("getwd: %w", err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/lazyr/lazyr") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod of github.com/lazyr/lazyr not found above the working directory")
		}
		dir = parent
	}
}

var lazyrBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// BuildLazyr builds ./cmd/lazyr once per test binary and returns the path of
// the binary. The directory is world-readable so tests can run the binary as
// another user. CheckNoLeakedFds removes it when the tests are done.
func BuildLazyr(t testing.TB) string {
	t.Helper()
	b := &lazyrBuild
	b.once.Do(func() {
		root, err := ModuleRoot()
		if err != nil {
			b.err = err
			return
		}
		dir, err := os.MkdirTemp("", "lazyr-bin-")
		if err != nil {
			b.err = fmt.Errorf("temp dir for lazyr: %w", err)
			return
		}
		b.dir = dir
		// MkdirTemp makes 0700; the non-root tests must reach the binary.
		if err := os.Chmod(dir, 0o755); err != nil {
			b.err = fmt.Errorf("chmod %s: %w", dir, err)
			return
		}
		out := filepath.Join(dir, "lazyr")
		cmd := exec.Command("go", "build", "-o", out, "./cmd/lazyr")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as the Makefile builds it (static: starts sooner)
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build ./cmd/lazyr: %w\n%s", err, msg)
			return
		}
		b.path = out
	})
	if b.err != nil {
		t.Fatalf("building lazyr: %v", b.err)
	}
	return b.path
}

// removeLazyrBuild deletes the directory BuildLazyr built into, if any.
func removeLazyrBuild() {
	if lazyrBuild.dir != "" {
		_ = os.RemoveAll(lazyrBuild.dir)
	}
}

var victimBuild struct {
	mu    sync.Mutex
	gcc   string // gcc version, part of the cache key
	cache map[string]string
}

// VictimCacheDir is where built victims are kept between runs.
func VictimCacheDir() string {
	return filepath.Join(os.TempDir(), "lazyr-victims")
}

// BuildVictim compiles integration/victims/NAME.c (with every header of that
// folder as a dependency) and returns the path of the binary. Binaries are
// cached by a hash of the sources, the flags and the gcc version, so a rerun
// with unchanged sources does not compile.
func BuildVictim(t testing.TB, name string, extraFlags ...string) string {
	t.Helper()
	path, err := buildVictim(name, extraFlags)
	if err != nil {
		t.Fatalf("building victim %s: %v", name, err)
	}
	return path
}

func buildVictim(name string, extraFlags []string) (string, error) {
	vb := &victimBuild
	vb.mu.Lock()
	defer vb.mu.Unlock()

	key := name + "\x00" + strings.Join(extraFlags, "\x00")
	if p, ok := vb.cache[key]; ok {
		return p, nil
	}
	if vb.gcc == "" {
		v, err := exec.Command("gcc", "-dumpfullversion").Output()
		if err != nil {
			return "", fmt.Errorf("gcc -dumpfullversion (is gcc installed?): %w", err)
		}
		vb.gcc = strings.TrimSpace(string(v))
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	srcDir := filepath.Join(root, "integration", "victims")
	src := filepath.Join(srcDir, name+".c")
	flags := append(append([]string{}, VictimCFlags...), extraFlags...)

	h := sha256.New()
	fmt.Fprintf(h, "layout 2\x00gcc %s\x00flags %s\x00", vb.gcc, strings.Join(flags, "\x00"))
	files, err := filepath.Glob(filepath.Join(srcDir, "*.h"))
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	files = append([]string{src}, files...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("read victim source: %w", err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", filepath.Base(f), len(b))
		h.Write(b)
	}
	sum := hex.EncodeToString(h.Sum(nil))[:16]

	// The binary keeps the victim's own name (so comm, ps and the images
	// say "counter"), in a folder named after the hash.
	cacheDir := VictimCacheDir()
	out := filepath.Join(cacheDir, name+"-"+sum, name)
	if st, err := os.Stat(out); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		if err := compileVictim(cacheDir, filepath.Dir(out), src, name, flags); err != nil {
			return "", err
		}
	}
	if vb.cache == nil {
		vb.cache = map[string]string{}
	}
	vb.cache[key] = out
	return out, nil
}

// compileVictim compiles src into final/name. It builds in a private folder
// and renames that folder into place, so concurrent test binaries never run
// a half-written file.
func compileVictim(cacheDir, final, src, name string, flags []string) error {
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return fmt.Errorf("victim cache dir: %w", err)
	}
	tmp, err := os.MkdirTemp(cacheDir, ".build-")
	if err != nil {
		return fmt.Errorf("victim build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return fmt.Errorf("chmod victim build dir: %w", err)
	}
	args := append(append([]string{}, flags...), "-o", filepath.Join(tmp, name), src)
	cmd := exec.Command("gcc", args...)
	cmd.Dir = filepath.Dir(src)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gcc %s: %w\n%s", strings.Join(args, " "), err, msg)
	}
	if err := os.Rename(tmp, final); err != nil {
		// Another test binary installed the same build meanwhile.
		if _, serr := os.Stat(filepath.Join(final, name)); serr == nil {
			return nil
		}
		return fmt.Errorf("install victim: %w", err)
	}
	return nil
}
