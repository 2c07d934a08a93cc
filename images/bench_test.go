package images

import (
	"testing"

	criu_core "github.com/checkpoint-restore/go-criu/v8/crit/images/criu-core"
)

// BenchmarkWriteSmall measures one small image write (temp file, fsync,
// rename): the fixed cost every image of a dump pays.
func BenchmarkWriteSmall(b *testing.B) {
	d := newDir(b)
	e := filled(&criu_core.TaskKobjIdsEntry{}, 1)
	i := 0
	for b.Loop() {
		i++
		if err := d.Write(IDsName(i), e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWriteSmallDeferSync: the same without the per-image fsync.
func BenchmarkWriteSmallDeferSync(b *testing.B) {
	d, err := CreateWithOptions(b.TempDir(), Options{DeferSync: true})
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	e := filled(&criu_core.TaskKobjIdsEntry{}, 1)
	// New names each time, as in a dump: replacing an existing file makes
	// ext4 (auto_da_alloc) flush the data at rename anyway.
	i := 0
	for b.Loop() {
		i++
		if err := d.Write(IDsName(i), e); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPagemapWrite writes 64 MiB of pages in 2 MiB runs (every other
// run contiguous, so entries merge) and closes the pagemap.
func BenchmarkPagemapWrite(b *testing.B) {
	d := newDir(b)
	chunk := make([]byte, 2<<20)
	b.SetBytes(64 << 20)
	for b.Loop() {
		w, err := d.CreatePagemap(1, 1)
		if err != nil {
			b.Fatal(err)
		}
		for i := range 32 {
			if err := w.Add(0x7f0000000000+uint64(i/2)*(8<<20)+uint64(i%2)*(2<<20), chunk, PEPresent); err != nil {
				b.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPagesReadAt reads 64 KiB runs through the pagemap (page cache hot).
func BenchmarkPagesReadAt(b *testing.B) {
	d := newDir(b)
	w, err := d.CreatePagemap(1, 1)
	if err != nil {
		b.Fatal(err)
	}
	const base = 0x7f0000000000
	for i := range 64 {
		if err := w.Add(base+uint64(i)*(1<<20), make([]byte, 1<<20), PEPresent|uint32(i%2)*PELazy); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	pm, err := d.ReadPagemap(1)
	if err != nil {
		b.Fatal(err)
	}
	p, err := d.OpenPages(pm)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	i := 0
	for b.Loop() {
		if err := p.ReadAt(buf, base+uint64(i%1024)*(64<<10)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
