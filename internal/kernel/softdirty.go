package kernel

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/lazyr/lazyr/internal/procfs"
)

// ProbeMemSoftDirty is informative: it reports whether CONFIG_MEM_SOFT_DIRTY
// works, i.e. a written page shows pagemap bit 55 and writing 4 to
// clear_refs clears it. On kernels without it (as on this project's
// machine) dirty tracking uses UFFD_FEATURE_WP_ASYNC + PAGEMAP_SCAN instead.
//
// Without the option the kernel still accepts "4" in clear_refs and simply
// never sets the bit, so the bit is tested first, and clear_refs (which
// write-protects every page of this process once) is only written when the
// bit was seen.
func ProbeMemSoftDirty() error {
	ps := os.Getpagesize()
	b, err := unix.Mmap(-1, 0, ps, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("soft-dirty: mmap: %w", err)
	}
	defer unix.Munmap(b)
	pm, err := procfs.OpenPagemap(os.Getpid())
	if err != nil {
		return fmt.Errorf("soft-dirty: %w", err)
	}
	defer pm.Close()
	read := func() (uint64, error) {
		var e [1]uint64
		if err := pm.Read(sliceStart(b), e[:]); err != nil {
			return 0, fmt.Errorf("soft-dirty: %w", err)
		}
		return e[0], nil
	}

	b[0] = 1
	e, err := read()
	if err != nil {
		return err
	}
	if e&procfs.PMPresent == 0 {
		return fmt.Errorf("soft-dirty: written page not present (entry %#x)", e)
	}
	if e&procfs.PMSoftDirty == 0 {
		return missing("soft-dirty: a written page lacks pagemap bit 55 (CONFIG_MEM_SOFT_DIRTY off)", nil)
	}
	if err := os.WriteFile("/proc/self/clear_refs", []byte("4"), 0); err != nil {
		return missing("soft-dirty: writing 4 to /proc/self/clear_refs", err)
	}
	if e, err = read(); err != nil {
		return err
	}
	if e&procfs.PMSoftDirty != 0 {
		return missing("soft-dirty: clear_refs 4 did not clear pagemap bit 55", nil)
	}
	b[0] = 2
	if e, err = read(); err != nil {
		return err
	}
	if e&procfs.PMSoftDirty == 0 {
		return missing("soft-dirty: a write after clear_refs did not set pagemap bit 55", nil)
	}
	return nil
}
