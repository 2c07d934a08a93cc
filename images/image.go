package images

import (
	"fmt"
	"io"

	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/proto"
)

// Write writes image name holding entries. The magic and the entry type
// come from the name (an unknown name, or entries of the wrong type, are
// errors). The image is written to a temporary file, fsynced and renamed
// into place. Images whose entries carry raw bytes need WriteRecords;
// pagemaps are better written with CreatePagemap, though Write accepts a
// PagemapHead followed by PagemapEntry values.
func (d *Dir) Write(name string, entries ...proto.Message) error {
	k, err := kindOf(name)
	if err != nil {
		return err
	}
	switch k.layout {
	case layoutPlain:
		for _, e := range entries {
			if err := checkType(name, e, k.newEntry()); err != nil {
				return err
			}
		}
	case layoutPagemap:
		for i, e := range entries {
			var want proto.Message = &pagemap.PagemapEntry{}
			if i == 0 {
				want = &pagemap.PagemapHead{}
			}
			if err := checkType(name, e, want); err != nil {
				return err
			}
		}
	case layoutPayload:
		return fmt.Errorf("%s: entries carry raw data, use WriteRecords", name)
	case layoutGhost:
		return fmt.Errorf("%s: use WriteGhostFile", name)
	default:
		return fmt.Errorf("%s: writing %s images is not supported", name, k)
	}
	buf, err := appendHeader(nil, k)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if buf, err = appendEntry(buf, e); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return d.writeAtomic(name, func(w io.Writer) error {
		_, err := w.Write(buf)
		return err
	})
}

// Record is an entry plus the raw bytes CRIU stores right after it: pipe or
// FIFO contents (pipes-data, fifo-data), a socket queue packet (sk-queues),
// the in and out queues of a TCP stream (tcp-stream, in queue first), BPF map
// keys then values (bpfmap-data). The entry's own size fields must add up
// to len(Payload).
type Record struct {
	Entry   proto.Message
	Payload []byte
}

// WriteRecords writes an image whose entries are followed by raw bytes.
func (d *Dir) WriteRecords(name string, recs ...Record) error {
	k, err := kindOf(name)
	if err != nil {
		return err
	}
	if k.layout != layoutPayload {
		return fmt.Errorf("%s: entries carry no raw data, use Write", name)
	}
	hdr, err := appendHeader(nil, k)
	if err != nil {
		return err
	}
	for i, r := range recs {
		if err := checkType(name, r.Entry, k.newEntry()); err != nil {
			return err
		}
		n, err := k.payloadLen(r.Entry)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		if n != uint64(len(r.Payload)) {
			return fmt.Errorf("%s: record %d declares %d bytes of data but has %d", name, i, n, len(r.Payload))
		}
	}
	return d.writeAtomic(name, func(w io.Writer) error {
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		var buf []byte
		for _, r := range recs {
			var err error
			if buf, err = appendEntry(buf[:0], r.Entry); err != nil {
				return err
			}
			// Small payloads are coalesced with their entry; big ones
			// go straight from the caller's slice.
			if len(r.Payload) < 64<<10 {
				buf = append(buf, r.Payload...)
				if _, err := w.Write(buf); err != nil {
					return err
				}
				continue
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
			if _, err := w.Write(r.Payload); err != nil {
				return err
			}
		}
		return nil
	})
}

// Read reads every entry of image name, checking its magic:
//
//	cores, err := images.Read[criu_core.CoreEntry](dir, images.CoreName(pid))
//
// For images with raw data after the entries the data is skipped (use
// ReadRecords to get it).
func Read[T any, PT interface {
	*T
	proto.Message
}](d *Dir, name string) ([]PT, error) {
	out, _, err := readRecords[T, PT](d, name, false)
	return out, err
}

// ReadOne is Read for images that must hold exactly one entry.
func ReadOne[T any, PT interface {
	*T
	proto.Message
}](d *Dir, name string) (PT, error) {
	out, err := Read[T, PT](d, name)
	if err != nil {
		return nil, err
	}
	if len(out) != 1 {
		return nil, fmt.Errorf("%s: %w: %d entries, want exactly 1", name, ErrCorrupt, len(out))
	}
	return out[0], nil
}

// ReadRecords reads an image whose entries are followed by raw bytes and
// returns the entries and, index for index, their data.
func ReadRecords[T any, PT interface {
	*T
	proto.Message
}](d *Dir, name string) ([]PT, [][]byte, error) {
	return readRecords[T, PT](d, name, true)
}

func readRecords[T any, PT interface {
	*T
	proto.Message
}](d *Dir, name string, wantPayload bool) ([]PT, [][]byte, error) {
	k, err := kindOf(name)
	if err != nil {
		return nil, nil, err
	}
	switch k.layout {
	case layoutPlain:
		if wantPayload {
			return nil, nil, fmt.Errorf("%s: entries carry no raw data, use Read", name)
		}
	case layoutPayload:
	case layoutPagemap:
		return nil, nil, fmt.Errorf("%s: use ReadPagemap", name)
	case layoutGhost:
		return nil, nil, fmt.Errorf("%s: use ReadGhostFile", name)
	default:
		return nil, nil, fmt.Errorf("%s: reading %s images is not supported", name, k)
	}
	if err := checkType(name, PT(new(T)), k.newEntry()); err != nil {
		return nil, nil, err
	}
	f, size, err := d.openImage(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return decodeRecords[T, PT](newReader(f, size, name), k, wantPayload)
}

func decodeRecords[T any, PT interface {
	*T
	proto.Message
}](r *reader, k *kind, wantPayload bool) ([]PT, [][]byte, error) {
	if err := r.expectHeader(k); err != nil {
		return nil, nil, err
	}
	var (
		out      []PT
		payloads [][]byte
	)
	for !r.atEOF() {
		e := PT(new(T))
		if err := r.entry(e); err != nil {
			return nil, nil, err
		}
		out = append(out, e)
		if k.layout != layoutPayload {
			continue
		}
		n, err := k.payloadLen(e)
		if err != nil {
			return nil, nil, err
		}
		if wantPayload {
			p, err := r.readN("entry data", n, false)
			if err != nil {
				return nil, nil, err
			}
			payloads = append(payloads, p)
		} else if err := r.skip("entry data", n); err != nil {
			return nil, nil, err
		}
	}
	return out, payloads, nil
}
