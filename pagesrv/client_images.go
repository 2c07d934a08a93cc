package pagesrv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"

	"github.com/lazyr/lazyr/images"
)

// FetchStats counts what FetchImages moved.
type FetchStats struct {
	mu sync.Mutex

	Files      int    // image files fetched as they are
	FileBytes  uint64 // their size
	Pagemaps   int    // process pagemaps rebuilt
	Pages      uint64 // pages fetched into the local pages files
	LazyPages  uint64 // pages left to the server (PE_LAZY without data)
	PagesBytes uint64 // bytes of the pages fetched
}

// FetchedMark is the file FetchImages leaves in a directory it fetched
// into. Such a directory mirrors one dump at one moment: a later fetch
// (the same migration retried, the source's memory changed meanwhile) must
// fetch again rather than reuse it, unlike a directory copied by hand.
const FetchedMark = ".fetched-from-page-server"

// procPagemapRe matches the pagemap of a process (not pagemap-shmem-*).
var procPagemapRe = regexp.MustCompile(`^pagemap-([0-9]+)\.img$`)

// fetchChunk bounds one ReadPages of FetchImages (it pipelines
// MaxRequestBytes requests inside).
const fetchChunk = 16 << 20

// FetchImages makes dstDir a local image directory for a lazy restore whose
// memory comes from this server: every file the server offers is fetched,
// except that the process memory is not copied wholesale. Each process's
// pagemap is rebuilt: runs marked PE_LAZY (what a lazy restore leaves to
// the lazy-pages daemon) get entries without data, and only the other runs
// (the few pages a lazy restore fills eagerly, such as the stack) are
// fetched page by page into a fresh pages file. The pages files of process
// pagemaps are therefore never fetched; every other file is (shared memory
// pagemaps and their pages included). inventory.img, which marks an image
// set complete, is fetched last, so a directory without it is an
// interrupted fetch; an inventory already there is removed first, and
// FetchedMark is written.
//
// Nothing is fsynced: the images are good only together with the memory on
// the server, so there is nothing for them to survive a crash of this host
// for.
//
// The result is what `lazyr dump --lazy-pages` writes: restore --lazy-pages
// reads it, and a lazy-pages daemon serves the lazy runs from the server.
func (c *Client) FetchImages(dstDir string) (*FetchStats, error) {
	files, err := c.ListFiles()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dstDir, 0o700); err != nil {
		return nil, fmt.Errorf("fetch images: %w", err)
	}
	if err := os.Remove(filepath.Join(dstDir, images.InventoryName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("fetch images: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dstDir, FetchedMark), nil, 0o600); err != nil {
		return nil, fmt.Errorf("fetch images: %w", err)
	}
	st := &FetchStats{}
	var pagemaps, pagesFiles, plain []FileInfo
	var inventory *FileInfo
	for _, f := range files {
		switch {
		case f.Name == images.InventoryName:
			inventory = &f
		case procPagemapRe.MatchString(f.Name):
			pagemaps = append(pagemaps, f)
		case strings.HasPrefix(f.Name, "pages-") && strings.HasSuffix(f.Name, ".img"):
			pagesFiles = append(pagesFiles, f)
		default:
			plain = append(plain, f)
		}
	}
	if inventory == nil {
		return st, fmt.Errorf("fetch images: the server offers no %s: not an image directory: %w", images.InventoryName, images.ErrNotFound)
	}
	// Process pagemaps: fetched to a scratch directory and decoded first,
	// to know which pages files are rebuilt rather than fetched.
	tmp, err := os.MkdirTemp(dstDir, ".pagemaps-*")
	if err != nil {
		return st, fmt.Errorf("fetch images: %w", err)
	}
	defer os.RemoveAll(tmp)
	type procPagemap struct {
		pid int
		pm  *images.Pagemap
	}
	var procs []procPagemap
	rebuilt := map[uint32]bool{}
	for _, f := range pagemaps {
		pid, err := strconv.Atoi(procPagemapRe.FindStringSubmatch(f.Name)[1])
		if err != nil || pid <= 0 || pid > 1<<31-1 {
			return st, fmt.Errorf("fetch images: %s: %w", f.Name, ErrBadName)
		}
		if err := c.FetchFile(tmp, f); err != nil {
			return st, err
		}
		pm, err := decodeRawPagemap(filepath.Join(tmp, f.Name))
		if err != nil {
			return st, fmt.Errorf("fetch images: %s: %w", f.Name, err)
		}
		procs = append(procs, procPagemap{pid, pm})
		rebuilt[pm.PagesID] = true
	}
	for _, f := range pagesFiles {
		id, err := strconv.ParseUint(f.Name[len("pages-"):len(f.Name)-len(".img")], 10, 32)
		if err != nil || !rebuilt[uint32(id)] {
			plain = append(plain, f) // not a process's: fetched as it is
		}
	}
	// The files come over while the pagemaps are rebuilt: the requests
	// share the connection, the local file work overlaps.
	fetched := make(chan error, 1)
	go func() { fetched <- c.fetchFiles(dstDir, plain, st) }()
	dir, err := images.CreateWithOptions(dstDir, images.Options{DeferSync: true})
	if err == nil {
		defer dir.Close()
		for _, p := range procs {
			if err = c.rebuildPagemap(dir, p.pid, p.pm, st); err != nil {
				err = fmt.Errorf("fetch images: pagemap of pid %d: %w", p.pid, err)
				break
			}
			st.Pagemaps++
		}
	}
	if ferr := <-fetched; err == nil {
		err = ferr
	}
	if err != nil {
		return st, err
	}
	if err := c.fetchFiles(dstDir, []FileInfo{*inventory}, st); err != nil {
		return st, err
	}
	return st, nil
}

// fetchWorkers bounds the files FetchImages has in flight.
const fetchWorkers = 4

// fetchFiles fetches files into dir, a few at a time, and counts them in
// st (under st's own lock: rebuildPagemap counts concurrently).
func (c *Client) fetchFiles(dir string, files []FileInfo, st *FetchStats) error {
	work := make(chan FileInfo)
	errs := make(chan error, fetchWorkers)
	for range min(fetchWorkers, len(files)) {
		go func() {
			var err error
			for f := range work {
				if err != nil {
					continue // drain after a failure
				}
				if err = c.FetchFile(dir, f); err == nil {
					st.mu.Lock()
					st.Files++
					st.FileBytes += f.Size
					st.mu.Unlock()
				}
			}
			errs <- err
		}()
	}
	for _, f := range files {
		work <- f
	}
	close(work)
	var first error
	for range min(fetchWorkers, len(files)) {
		if err := <-errs; first == nil {
			first = err
		}
	}
	return first
}

// rebuildPagemap writes pid's pagemap into dir: lazy runs without data,
// every other run with its pages read from the server.
func (c *Client) rebuildPagemap(dir *images.Dir, pid int, pm *images.Pagemap, st *FetchStats) error {
	w, err := dir.CreatePagemap(pid, pm.PagesID)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			w.Abort()
		}
	}()
	var buf []byte
	for _, e := range pm.Extents {
		if e.Flags&images.PELazy != 0 {
			// Served on demand by the daemon; the server has them (here
			// or, for PE_PARENT, in its parent images).
			if err := w.AddNoData(e.Vaddr, e.NrPages, images.PELazy); err != nil {
				return err
			}
			st.LazyPages += e.NrPages
			continue
		}
		for addr, left := e.Vaddr, e.NrPages*images.PageSize; left > 0; {
			n := min(left, fetchChunk)
			if uint64(cap(buf)) < n {
				buf = make([]byte, n)
			}
			if err := c.ReadPages(pid, addr, buf[:n]); err != nil {
				return fmt.Errorf("pages at %#x: %w", addr, err)
			}
			if err := w.Add(addr, buf[:n], images.PEPresent); err != nil {
				return err
			}
			st.Pages += n / images.PageSize
			st.PagesBytes += n
			addr, left = addr+n, left-n
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	ok = true
	return nil
}

// decodeRawPagemap decodes a pagemap image whose pages file is not there
// (images.Dir.ReadPagemap insists on it), with the rules of CRIU's
// init_compat_pagemap_entry for entries of older versions.
func decodeRawPagemap(path string) (*images.Pagemap, error) {
	img, err := images.DecodeFile(path)
	if err != nil {
		return nil, err
	}
	if img.Magic != "PAGEMAP" || len(img.Entries) == 0 {
		return nil, fmt.Errorf("%w: magic %s with %d entries is not a pagemap", images.ErrCorrupt, img.Magic, len(img.Entries))
	}
	head, ok := img.Entries[0].(*pagemap.PagemapHead)
	if !ok {
		return nil, fmt.Errorf("%w: pagemap without a head", images.ErrCorrupt)
	}
	pm := &images.Pagemap{PagesID: head.GetPagesId()}
	var off int64
	for i, m := range img.Entries[1:] {
		pe, ok := m.(*pagemap.PagemapEntry)
		if !ok {
			return nil, fmt.Errorf("%w: pagemap entry %d has type %T", images.ErrCorrupt, i, m)
		}
		flags := pe.GetFlags()
		if pe.GetInParent() {
			flags |= images.PEParent
		} else if pe.Flags == nil {
			flags = images.PEPresent
		}
		nr := pe.GetNrPages()
		if pe.NrPages == nil {
			nr = uint64(pe.GetCompatNrPages())
		}
		e := images.Extent{Vaddr: pe.GetVaddr(), NrPages: nr, Flags: flags, Offset: -1}
		if e.Present() {
			e.Offset = off
			off += int64(nr) * images.PageSize
		}
		pm.Extents = append(pm.Extents, e)
	}
	// Sorted, non-overlapping, no wrap-around: what the rebuild relies on
	// to write a valid pagemap.
	if err := pm.Validate(); err != nil {
		return nil, err
	}
	return pm, nil
}
