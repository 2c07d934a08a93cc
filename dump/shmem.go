package dump

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/lazyr/lazyr/images"
)

// shmemPagesBase is the first pages-ID.img number used for shared memory objects. Task pagemaps use small
// ids (pages-1.img for the first task); shared memory takes ids from here up so that the two never meet.
const shmemPagesBase = 1 << 30

// shmemObject is one shared memory object, the inode of MAP_SHARED anonymous memory or of a memfd, whose
// contents go to pagemap-shmem-SHMID.img (SHMID: the inode number) and a pages file of their own, in
// CRIU's layout: the pagemap's "addresses" are byte offsets into the object. The task's pages are not
// involved: the object is read through a file of it (/proc/PID/map_files or /proc/PID/fd), its data
// found with SEEK_DATA/SEEK_HOLE, so pages never written (holes) take no room in the images, and pages
// swapped out are read back like any other.
type shmemObject struct {
	shmid uint64
	path  string // a path lazyr opens the object through
	size  uint64 // bytes of the object to keep
}

type shmemState struct {
	objs       map[uint64]*shmemObject
	registered bool
}

// addShmem records a shared memory object to dump (once per inode, the largest size wins).
func (ft *fileTable) addShmem(shmid uint64, path string, size uint64) {
	s := kindState[shmemState](ft, "shmem")
	if s.objs == nil {
		s.objs = map[uint64]*shmemObject{}
	}
	if o := s.objs[shmid]; o != nil {
		o.size = max(o.size, size)
		return
	}
	s.objs[shmid] = &shmemObject{shmid: shmid, path: path, size: size}
	if !s.registered {
		s.registered = true
		ft.addRawImage(func(d *images.Dir) error { return writeShmem(d, s) })
	}
}

// writeShmem writes every object's pagemap and pages; it runs with the task still frozen.
func writeShmem(d *images.Dir, s *shmemState) error {
	ids := make([]uint64, 0, len(s.objs))
	for id := range s.objs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for i, id := range ids {
		if err := writeShmemObject(d, s.objs[id], shmemPagesBase+uint32(i)); err != nil {
			return fmt.Errorf("shared memory %d: %w", id, err)
		}
	}
	return nil
}

func writeShmemObject(d *images.Dir, o *shmemObject, pagesID uint32) error {
	src, err := os.Open(o.path)
	if err != nil {
		return err
	}
	defer src.Close()
	exts, err := dataExtents(src, int64(o.size))
	if err != nil {
		return err
	}
	return writeShmemData(d, o.shmid, pagesID, src, exts)
}

// writeShmemData writes pagemap-shmem-SHMID.img and its pages file from the data extents exts of src, in
// byte offsets of the object; the pages file is left out when there is no data.
func writeShmemData(d *images.Dir, shmid uint64, pagesID uint32, src io.ReaderAt, exts [][2]int64) error {
	entries := []proto.Message{&pagemap.PagemapHead{PagesId: proto.Uint32(pagesID)}}
	if len(exts) > 0 {
		tmp, err := os.CreateTemp(d.Path(), "."+images.PagesName(pagesID)+".tmp-*")
		if err != nil {
			return err
		}
		ok := false
		defer func() {
			if !ok {
				tmp.Close()
				os.Remove(tmp.Name())
			}
		}()
		for _, e := range exts {
			// Page-aligned: a pagemap counts pages; the tail past the end of the object reads as zeros.
			start := e[0] &^ (images.PageSize - 1)
			end := (e[1] + images.PageSize - 1) &^ (images.PageSize - 1)
			n, err := io.Copy(tmp, io.NewSectionReader(src, start, end-start))
			if err != nil {
				return fmt.Errorf("copy %d bytes at %d: %w", end-start, start, err)
			}
			if pad := end - start - n; pad > 0 {
				if _, err := tmp.Write(make([]byte, pad)); err != nil {
					return err
				}
			}
			entries = append(entries, &pagemap.PagemapEntry{
				Vaddr: proto.Uint64(uint64(start)), CompatNrPages: proto.Uint32(0),
				NrPages: proto.Uint64(uint64(end-start) / images.PageSize), Flags: proto.Uint32(images.PEPresent),
			})
		}
		if err := tmp.Sync(); err != nil {
			return err
		}
		if err := tmp.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp.Name(), filepath.Join(d.Path(), images.PagesName(pagesID))); err != nil {
			return err
		}
		ok = true
	}
	return d.Write(images.PagemapShmemName(shmid), entries...)
}

// dataExtents lists the [start, end) byte ranges of f below limit that hold data, with SEEK_DATA and
// SEEK_HOLE. Adjacent extents are merged; on page-granular filesystems (tmpfs, ext4) they are page
// aligned.
func dataExtents(f *os.File, limit int64) ([][2]int64, error) {
	fd := int(f.Fd())
	var out [][2]int64
	for off := int64(0); off < limit; {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return nil, fmt.Errorf("SEEK_DATA at %d: %w", off, err)
		}
		if start >= limit {
			break
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("SEEK_HOLE at %d: %w", start, err)
		}
		end = min(end, limit)
		if n := len(out); n > 0 && out[n-1][1] >= start {
			out[n-1][1] = end
		} else {
			out = append(out, [2]int64{start, end})
		}
		off = end
	}
	return out, nil
}
