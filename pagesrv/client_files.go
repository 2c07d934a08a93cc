package pagesrv

import (
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
)

// ListFiles returns the files the server offers.
func (c *Client) ListFiles() ([]FileInfo, error) {
	p := &pending{want: TypeFileList}
	if err := c.roundTrip(p, MsgListFiles{}); err != nil {
		return nil, fmt.Errorf("list files: %w", err)
	}
	return p.files, nil
}

// FetchFile fetches one served file into dstDir under the same name. The
// file appears (by rename) only once it is complete and its size and
// CRC-32C match what the server sent.
func (c *Client) FetchFile(dstDir string, f FileInfo) error {
	if err := ValidName(f.Name); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dstDir, ".pagesrv-part-*") // not f.Name: it may be NAME_MAX long
	if err != nil {
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	sink := &fileSink{f: tmp}
	if err := c.roundTrip(&pending{want: TypeFileData, sink: sink}, MsgGetFile{Name: f.Name}); err != nil {
		sink.abort()
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	if err := tmp.Chmod(os.FileMode(f.Mode & 0o777)); err != nil {
		sink.abort()
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dstDir, f.Name)); err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("fetch %s: %w", f.Name, err)
	}
	return nil
}

// FetchFiles fetches every file the server offers into dstDir.
func (c *Client) FetchFiles(dstDir string) error {
	files, err := c.ListFiles()
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := c.FetchFile(dstDir, f); err != nil {
			return err
		}
	}
	return nil
}

// fileSink receives one file on the reader goroutine.
type fileSink struct {
	f   *os.File
	off uint64
	crc uint32
	err error

	closed bool
}

func (s *fileSink) write(off uint64, data []byte) error {
	if off != s.off {
		return fmt.Errorf("%w: file data at %d, expected %d", ErrProtocol, off, s.off)
	}
	s.off += uint64(len(data))
	s.crc = crc32.Update(s.crc, castagnoli, data)
	if s.err == nil {
		// A local write error fails this file at its end, not the session.
		_, s.err = s.f.Write(data)
	}
	return nil
}

func (s *fileSink) end(m MsgFileEnd) error {
	switch {
	case s.err != nil:
		return s.err
	case m.Size != s.off:
		return fmt.Errorf("%w: file end says %d bytes, received %d", ErrProtocol, m.Size, s.off)
	case m.CRC32C != s.crc:
		return fmt.Errorf("%w: CRC-32C %#08x, received data has %#08x", ErrProtocol, m.CRC32C, s.crc)
	}
	return nil
}

// abort removes the partial file. Only the goroutine that waits for the
// transfer calls it, after the reply (or the failure) arrived.
func (s *fileSink) abort() {
	if !s.closed {
		s.closed = true
		s.f.Close()
		os.Remove(s.f.Name())
	}
}
