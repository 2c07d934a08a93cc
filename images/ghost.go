package images

import (
	"fmt"
	"io"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"google.golang.org/protobuf/proto"
)

// GhostChunk is one data extent of a ghost (deleted but open) file. Holes
// between chunks are not stored: a sparse file stays sparse.
type GhostChunk struct {
	Off  uint64
	Data []byte
}

// WriteGhostFile writes ghost-file-ID.img: the file's metadata (e, whose
// size field should hold the full file size) then, because CRIU's chunked
// layout is used (e.chunks is set), each chunk as a GhostChunkEntry{len,
// off} followed by its bytes. Chunks must be sorted and must not overlap.
func (d *Dir) WriteGhostFile(id uint32, e *ghost_file.GhostFileEntry, chunks []GhostChunk) error {
	name := GhostFileName(id)
	if e == nil {
		return fmt.Errorf("%s: nil entry", name)
	}
	var end uint64
	for i, c := range chunks {
		if c.Off < end {
			return fmt.Errorf("%s: chunk %d at %d overlaps or precedes the previous one (ends at %d)", name, i, c.Off, end)
		}
		end = c.Off + uint64(len(c.Data))
		if end < c.Off {
			return fmt.Errorf("%s: chunk %d overflows", name, i)
		}
	}
	if e.Size != nil && end > e.GetSize() {
		return fmt.Errorf("%s: chunks end at %d, beyond the file size %d", name, end, e.GetSize())
	}
	e = proto.Clone(e).(*ghost_file.GhostFileEntry)
	e.Chunks = proto.Bool(true)
	k, err := kindOf(name)
	if err != nil {
		return err
	}
	hdr, err := appendHeader(nil, k)
	if err != nil {
		return err
	}
	if hdr, err = appendEntry(hdr, e); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return d.writeAtomic(name, func(w io.Writer) error {
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		var buf []byte
		for _, c := range chunks {
			var err error
			ce := &ghost_file.GhostChunkEntry{Len: proto.Uint64(uint64(len(c.Data))), Off: proto.Uint64(c.Off)}
			if buf, err = appendEntry(buf[:0], ce); err != nil {
				return err
			}
			if _, err := w.Write(buf); err != nil {
				return err
			}
			if _, err := w.Write(c.Data); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadGhostFile reads ghost-file-ID.img in either of CRIU's layouts: chunked
// or, for old images, the whole contents after the entry (returned as one
// chunk at offset 0).
func (d *Dir) ReadGhostFile(id uint32) (*ghost_file.GhostFileEntry, []GhostChunk, error) {
	name := GhostFileName(id)
	f, size, err := d.openImage(name)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	return decodeGhost(newReader(f, size, name))
}

func decodeGhost(r *reader) (*ghost_file.GhostFileEntry, []GhostChunk, error) {
	k := kindByMagic("GHOST_FILE")
	if err := r.expectHeader(k); err != nil {
		return nil, nil, err
	}
	e := &ghost_file.GhostFileEntry{}
	if err := r.entry(e); err != nil {
		return nil, nil, err
	}
	var chunks []GhostChunk
	if !e.GetChunks() {
		if r.remain > 0 {
			data, err := r.readN("file contents", uint64(r.remain), false)
			if err != nil {
				return nil, nil, err
			}
			chunks = append(chunks, GhostChunk{Data: data})
		}
		return e, chunks, nil
	}
	var end uint64
	for !r.atEOF() {
		ce := &ghost_file.GhostChunkEntry{}
		if err := r.entry(ce); err != nil {
			return nil, nil, err
		}
		if ce.GetOff() < end {
			return nil, nil, r.corrupt("ghost chunk at %d overlaps the previous one ending at %d", ce.GetOff(), end)
		}
		data, err := r.readN("chunk data", ce.GetLen(), false)
		if err != nil {
			return nil, nil, err
		}
		end = ce.GetOff() + ce.GetLen()
		if end < ce.GetOff() {
			return nil, nil, r.corrupt("ghost chunk at %d of %d bytes overflows", ce.GetOff(), ce.GetLen())
		}
		chunks = append(chunks, GhostChunk{Off: ce.GetOff(), Data: data})
	}
	return e, chunks, nil
}
