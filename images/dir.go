package images

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir is an image directory. It keeps the directory open so that Sync can
// fsync it (making renames of freshly written images durable). Reads and
// writes of different images may run concurrently: each image is written
// through its own temporary file.
type Dir struct {
	path string
	dir  *os.File
	opts Options
}

// Options tune how a Dir writes images.
type Options struct {
	// DeferSync skips the fsync of each image as it is written (about
	// 0.9 ms per image on this machine's ext4, most of a small image's
	// cost); Sync then flushes the whole filesystem with syncfs(2) and the
	// directory. Images are still renamed into place whole, but they are
	// durable only once Sync has returned: a dump must call it before it
	// reports success (and before it kills the dumped tasks).
	DeferSync bool
}

// Open opens an existing image directory for reading (and writing).
func Open(path string) (*Dir, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("images dir %s: %w: %w", path, ErrNotFound, err)
		}
		return nil, fmt.Errorf("images dir %s: %w", path, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("images dir %s: not a directory: %w", path, unix.ENOTDIR)
	}
	return openDir(path)
}

// Create opens image directory path for writing, creating it (and its
// parents) with mode 0700 if needed: images hold process memory.
func Create(path string) (*Dir, error) {
	return CreateWithOptions(path, Options{})
}

// CreateWithOptions is Create with write options.
func CreateWithOptions(path string, opts Options) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("create images dir %s: %w", path, err)
	}
	d, err := openDir(path)
	if err != nil {
		return nil, err
	}
	d.opts = opts
	return d, nil
}

func openDir(path string) (*Dir, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open images dir %s: %w", path, err)
	}
	return &Dir{path: path, dir: f}, nil
}

// Path returns the directory's path as given to Open or Create.
func (d *Dir) Path() string { return d.path }

// Close releases the directory descriptor. Images already written stay.
func (d *Dir) Close() error {
	if d.dir == nil {
		return nil
	}
	err := d.dir.Close()
	d.dir = nil
	return err
}

// Exists reports whether image name is present in the directory.
func (d *Dir) Exists(name string) bool {
	_, err := os.Lstat(d.file(name))
	return err == nil
}

// Remove deletes image name; a missing image is not an error.
func (d *Dir) Remove(name string) error {
	if err := os.Remove(d.file(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image: %w", err)
	}
	return nil
}

// Sync fsyncs the directory itself, so that images renamed into it survive
// a crash (with Options.DeferSync, it first writes back the images' data).
// Call it once after the last image of a dump is written.
func (d *Dir) Sync() error {
	if d.dir == nil {
		return fmt.Errorf("sync images dir %s: %w", d.path, os.ErrClosed)
	}
	if d.opts.DeferSync {
		// One syncfs instead of an fsync per image: it writes back every
		// dirty file of the filesystem, the images among them.
		if err := unix.Syncfs(int(d.dir.Fd())); err != nil {
			return fmt.Errorf("syncfs images dir %s: %w", d.path, err)
		}
	}
	if err := d.dir.Sync(); err != nil {
		return fmt.Errorf("sync images dir %s: %w", d.path, err)
	}
	return nil
}

func (d *Dir) file(name string) string { return filepath.Join(d.path, name) }

// openImage opens image name for reading, mapping a missing file to
// ErrNotFound (which also wraps fs.ErrNotExist).
func (d *Dir) openImage(name string) (*os.File, int64, error) {
	f, err := os.Open(d.file(name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, 0, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, 0, fmt.Errorf("open image: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("stat image %s: %w", name, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("image %s is not a regular file", name)
	}
	return f, st.Size(), nil
}

// tempFile creates a temporary file next to image name; commit renames it
// into place. The leading dot keeps it out of the way of tools listing
// *.img, and a crashed dump leaves only .tmp files behind.
func (d *Dir) tempFile(name string) (*os.File, error) {
	f, err := os.CreateTemp(d.path, "."+name+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("create image %s: %w", name, err)
	}
	return f, nil
}

// commit fsyncs and closes temporary file f and renames it to name.
// On error the temporary file is removed.
func (d *Dir) commit(f *os.File, name string) error {
	var err error
	if !d.opts.DeferSync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), d.file(name))
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write image %s: %w", name, err)
	}
	return nil
}

// writeAtomic writes image name with contents produced by fill.
func (d *Dir) writeAtomic(name string, fill func(w io.Writer) error) error {
	f, err := d.tempFile(name)
	if err != nil {
		return err
	}
	if err := fill(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write image %s: %w", name, err)
	}
	return d.commit(f, name)
}
