package pagesrv

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// fileChunk is how much of a file one loop turn reads and queues.
const fileChunk = 256 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ValidName checks that name is one plain path component, so that neither a
// client (GetFile) nor a server (FileList) can reach outside the directory.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > MaxNameLen ||
		strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	return nil
}

// fileStream is a GetFile in progress on a connection.
type fileStream struct {
	fd  int
	id  uint32
	off int64
	crc uint32
}

func (f *fileStream) close() { unix.Close(f.fd) }

// serveFileList answers ListFiles with the regular files of opts.Files.
func (s *Server) serveFileList(c *conn, id uint32) {
	var files []FileInfo
	if s.filesFD >= 0 {
		// List the directory opened at start (the one GetFile opens files
		// in) through a fresh open of ".": a dup would share, and move,
		// the directory offset.
		fd, err := unix.Openat(s.filesFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			s.replyError(c, id, CodeIO, fmt.Errorf("list %s: %w", s.opts.Files, err))
			return
		}
		d := os.NewFile(uintptr(fd), s.opts.Files)
		ents, err := d.ReadDir(-1)
		d.Close()
		if err != nil {
			s.replyError(c, id, CodeIO, fmt.Errorf("list %s: %w", s.opts.Files, err))
			return
		}
		for _, e := range ents {
			if !e.Type().IsRegular() || ValidName(e.Name()) != nil || s.skip(e.Name()) {
				continue
			}
			var st unix.Stat_t
			if err := unix.Fstatat(s.filesFD, e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				continue // removed meanwhile
			}
			files = append(files, FileInfo{Name: e.Name(), Size: uint64(st.Size), Mode: st.Mode & 0o7777})
		}
	}
	for {
		size, k := 4, 0
		for k < len(files) && size+fileInfoSize(files[k]) <= maxFileListBody {
			size += fileInfoSize(files[k])
			k++
		}
		var flags uint16
		if k < len(files) {
			flags = FlagMore
		}
		b := s.pool.get(HeaderSize + size)[:0]
		s.send(c, AppendMessage(b, id, flags, MsgFileList{Files: files[:k]}))
		files = files[k:]
		if flags == 0 {
			return
		}
	}
}

func (s *Server) skip(name string) bool { return s.opts.SkipFile != nil && s.opts.SkipFile(name) }

// startFile opens a served file; the loop then streams it chunk by chunk
// (streamChunk) as the socket drains, so a big file never sits in memory.
func (s *Server) startFile(c *conn, id uint32, name string) {
	if s.filesFD < 0 || s.skip(name) {
		s.replyError(c, id, CodeNotFound, fmt.Errorf("file %q is not served: %w", name, unix.ENOENT))
		return
	}
	// O_NOFOLLOW: a symlink planted in the directory must not serve what
	// it points to. O_NONBLOCK: a FIFO must not hang the loop.
	fd, err := unix.Openat(s.filesFD, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		code := CodeIO
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			code = CodeNotFound
		}
		s.replyError(c, id, code, fmt.Errorf("open %q: %w", name, err))
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		if err == nil {
			err = unix.ENOENT
		}
		s.replyError(c, id, CodeNotFound, fmt.Errorf("%q is not a regular file: %w", name, err))
		return
	}
	c.stream = &fileStream{fd: fd, id: id}
}

// streamChunk queues the next chunk of c's file, or its FileEnd.
func (s *Server) streamChunk(c *conn) {
	f := c.stream
	const meta = HeaderSize + 8
	buf := s.pool.get(meta + fileChunk)
	n, err := unix.Pread(f.fd, buf[meta:], f.off)
	for err == unix.EINTR {
		n, err = unix.Pread(f.fd, buf[meta:], f.off)
	}
	if err != nil {
		s.pool.put(buf)
		c.stream = nil
		f.close()
		s.replyError(c, f.id, CodeIO, fmt.Errorf("read file at %d: %w", f.off, err))
		return
	}
	if n == 0 {
		s.pool.put(buf)
		c.stream = nil
		f.close()
		s.stats.files.Add(1)
		s.sendMsg(c, f.id, 0, MsgFileEnd{Size: uint64(f.off), CRC32C: f.crc})
		return
	}
	data := buf[meta : meta+n]
	f.crc = crc32.Update(f.crc, castagnoli, data)
	le.PutUint64(buf[HeaderSize:], uint64(f.off))
	putHeader(buf, Header{Version: Version, Type: TypeFileData, Length: uint32(8 + n), ID: f.id})
	f.off += int64(n)
	s.send(c, buf[:meta+n])
}
