package images

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"google.golang.org/protobuf/proto"
)

// Encoding side: an image is built in memory (headers and entries are small;
// bulk data such as pages never goes through here) and written in one go.

// appendHeader appends the magic words of kind k.
func appendHeader(buf []byte, k *kind) ([]byte, error) {
	if k.layout == layoutRaw {
		return buf, nil
	}
	m, err := magicValue(k.magic)
	if err != nil {
		return nil, err
	}
	// inventory.img is the one image without the common/service word: CRIU
	// reads it first to learn the image version (CRTOOLS_IMAGES_V1_1).
	if k.magic != "INVENTORY" {
		prefix := "IMG_COMMON"
		if k.service {
			prefix = "IMG_SERVICE"
		}
		p, err := magicValue(prefix)
		if err != nil {
			return nil, err
		}
		buf = binary.LittleEndian.AppendUint32(buf, p)
	}
	return binary.LittleEndian.AppendUint32(buf, m), nil
}

var marshalOpts = proto.MarshalOptions{Deterministic: true}

// appendEntry appends one length-prefixed protobuf entry. Marshal fails if a
// proto2 required field is unset, which is what CRIU would reject too.
func appendEntry(buf []byte, m proto.Message) ([]byte, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, errors.New("nil entry")
	}
	start := len(buf)
	buf = append(buf, 0, 0, 0, 0)
	buf, err := marshalOpts.MarshalAppend(buf, m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", proto.MessageName(m), err)
	}
	n := len(buf) - start - 4
	if n > math.MaxUint32 {
		return nil, fmt.Errorf("%s entry of %d bytes does not fit the u32 size field", proto.MessageName(m), n)
	}
	binary.LittleEndian.PutUint32(buf[start:], uint32(n))
	return buf, nil
}

// checkType verifies that m has the entry type the image wants.
func checkType(name string, m, want proto.Message) error {
	if m == nil || !m.ProtoReflect().IsValid() {
		return fmt.Errorf("%s: nil entry", name)
	}
	if got, w := proto.MessageName(m), proto.MessageName(want); got != w {
		return fmt.Errorf("%s holds %s entries, not %s", name, w, got)
	}
	return nil
}

// reader decodes an image from untrusted bytes. remain is the number of
// bytes left in the file: every size read is checked against it before
// anything is allocated, so a corrupt size cannot make us allocate 4 GiB.
type reader struct {
	r       *bufio.Reader
	name    string
	off     int64
	remain  int64
	entries int
	scratch []byte
}

func newReader(r io.Reader, size int64, name string) *reader {
	return &reader{r: bufio.NewReaderSize(r, 64<<10), name: name, remain: size}
}

func (r *reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("%s: %w at offset %d: %s", r.name, ErrCorrupt, r.off, fmt.Sprintf(format, args...))
}

// ioErr turns a failed read of n bytes into an error: an early EOF means
// the file is shorter than it claimed (truncated), anything else is I/O.
func (r *reader) ioErr(what string, n int64, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return r.corrupt("%s: file ends early (wanted %d bytes)", what, n)
	}
	return fmt.Errorf("%s: read %s at offset %d: %w", r.name, what, r.off, err)
}

func (r *reader) atEOF() bool { return r.remain == 0 }

func (r *reader) u32(what string) (uint32, error) {
	if r.remain < 4 {
		return 0, r.corrupt("%s: only %d bytes left, want 4", what, r.remain)
	}
	var b [4]byte
	if _, err := io.ReadFull(r.r, b[:]); err != nil {
		return 0, r.ioErr(what, 4, err)
	}
	r.off += 4
	r.remain -= 4
	return binary.LittleEndian.Uint32(b[:]), nil
}

// readN reads n bytes into a fresh slice (or the scratch buffer if scratch).
func (r *reader) readN(what string, n uint64, scratch bool) ([]byte, error) {
	if n > uint64(r.remain) {
		return nil, r.corrupt("%s of %d bytes exceeds the %d bytes left", what, n, r.remain)
	}
	var b []byte
	if scratch {
		if uint64(cap(r.scratch)) < n {
			r.scratch = make([]byte, n)
		}
		b = r.scratch[:n]
	} else {
		b = make([]byte, n)
	}
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, r.ioErr(what, int64(n), err)
	}
	r.off += int64(n)
	r.remain -= int64(n)
	return b, nil
}

func (r *reader) skip(what string, n uint64) error {
	if n > uint64(r.remain) {
		return r.corrupt("%s of %d bytes exceeds the %d bytes left", what, n, r.remain)
	}
	if _, err := r.r.Discard(int(n)); err != nil {
		return r.ioErr(what, int64(n), err)
	}
	r.off += int64(n)
	r.remain -= int64(n)
	return nil
}

// header reads the magic words and returns the image's magic name.
func (r *reader) header() (string, error) {
	v, err := r.u32("magic")
	if err != nil {
		return "", err
	}
	name, ok := magicName(v)
	if !ok {
		return "", r.corrupt("unknown magic 0x%08x", v)
	}
	switch name {
	case "IMG_COMMON", "IMG_SERVICE":
		v2, err := r.u32("magic")
		if err != nil {
			return "", err
		}
		n2, ok := magicName(v2)
		if !ok || n2 == "IMG_COMMON" || n2 == "IMG_SERVICE" || n2 == "INVENTORY" {
			return "", r.corrupt("unknown magic 0x%08x after %s", v2, name)
		}
		if want := n2 == "STATS" || n2 == "IRMAP_CACHE"; want != (name == "IMG_SERVICE") {
			return "", r.corrupt("%s image under %s header", n2, name)
		}
		return n2, nil
	case "INVENTORY":
		return name, nil
	}
	return "", r.corrupt("magic %s (0x%08x) without IMG_COMMON header", name, v)
}

// expectHeader reads the header and checks it is the one of kind k.
func (r *reader) expectHeader(k *kind) error {
	start := r.off
	got, err := r.header()
	if err != nil {
		return err
	}
	if got != k.magic {
		r.off = start
		return r.corrupt("magic %s, want %s for %s", got, k.magic, k)
	}
	return nil
}

// entry reads one length-prefixed protobuf entry into m.
func (r *reader) entry(m proto.Message) error {
	start := r.off
	n, err := r.u32("entry size")
	if err != nil {
		return err
	}
	b, err := r.readN("entry", uint64(n), true)
	if err != nil {
		return err
	}
	// proto.Unmarshal copies bytes fields, so the scratch buffer can be reused.
	if err := proto.Unmarshal(b, m); err != nil {
		r.off = start
		return r.corrupt("entry %d (%s, %d bytes): %v", r.entries, proto.MessageName(m), n, err)
	}
	r.entries++
	return nil
}
