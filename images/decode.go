package images

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	"github.com/checkpoint-restore/go-criu/v8/crit/images/pagemap"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Image is a decoded image file, for display (lazyr show). Its JSON form is
// crit's: {"magic": "CORE", "entries": [...]}, entries rendered by protojson
// with the proto field names, as go-criu's crit does.
type Image struct {
	Magic   string
	Entries []proto.Message
	// Extra holds, index for index with Entries, what follows an entry
	// besides protobuf: for pipe data, socket queues, TCP queues, BPF map
	// data and ghost file contents the size of the raw bytes, in crit's
	// --no-payload style ("4.0 KB"). Empty when there is nothing.
	Extra []string
	// Size is the file size; for raw images (pages-*.img, Magic "PAGES",
	// and ip(8)/iptables dumps, Magic "RAW") it is all there is.
	Size int64
}

// DecodeFile decodes any image file. The layout is chosen from the magic,
// like crit does, so a renamed file still decodes; files without a header
// are recognised by name (pages-ID.img and the raw network dumps).
func DecodeFile(path string) (*Image, error) {
	name := filepath.Base(path)
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
		}
		return nil, fmt.Errorf("decode image: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("decode image %s: not a regular file", path)
	}
	return decodeImage(f, st.Size(), name)
}

func decodeImage(rd io.Reader, size int64, name string) (*Image, error) {
	if k, err := kindOf(name); err == nil && k.layout == layoutRaw {
		img := &Image{Magic: "RAW", Size: size}
		if strings.HasPrefix(name, "pages-") {
			img.Magic = "PAGES"
		}
		return img, nil
	}
	r := newReader(rd, size, name)
	m, err := r.header()
	if err != nil {
		return nil, err
	}
	k := kindByMagic(m)
	if k == nil {
		return nil, r.corrupt("no entry type known for magic %s", m)
	}
	img := &Image{Magic: m, Size: size}
	add := func(e proto.Message, extra string) {
		img.Entries = append(img.Entries, e)
		img.Extra = append(img.Extra, extra)
	}
	switch k.layout {
	case layoutPlain, layoutPayload:
		for !r.atEOF() {
			e := k.newEntry()
			if err := r.entry(e); err != nil {
				return nil, err
			}
			extra := ""
			if k.layout == layoutPayload {
				n, err := k.payloadLen(e)
				if err != nil {
					return nil, err
				}
				if err := r.skip("entry data", n); err != nil {
					return nil, err
				}
				extra = countBytes(n)
			}
			add(e, extra)
		}
	case layoutPagemap:
		if r.atEOF() {
			return nil, r.corrupt("missing pagemap head")
		}
		var e proto.Message = &pagemap.PagemapHead{}
		for !r.atEOF() {
			if err := r.entry(e); err != nil {
				return nil, err
			}
			add(e, "")
			e = &pagemap.PagemapEntry{}
		}
	case layoutGhost:
		e := &ghost_file.GhostFileEntry{}
		if err := r.entry(e); err != nil {
			return nil, err
		}
		if !e.GetChunks() {
			n := uint64(r.remain)
			if err := r.skip("file contents", n); err != nil {
				return nil, err
			}
			add(e, countBytes(n))
			break
		}
		add(e, "")
		for !r.atEOF() {
			ce := &ghost_file.GhostChunkEntry{}
			if err := r.entry(ce); err != nil {
				return nil, err
			}
			if err := r.skip("chunk data", ce.GetLen()); err != nil {
				return nil, err
			}
			add(ce, countBytes(ce.GetLen()))
		}
	case layoutIPC:
		if err := decodeIPC(r, m, add); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%s: decoding %s images is not supported", name, m)
	}
	return img, nil
}

// countBytes formats n the way crit does for payloads it skips.
func countBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for i := n / unit; i >= unit; i /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "KMGTPE"[exp])
}

// AllowPartial: a display must not fail on an entry built without its
// required fields (decoded entries always have them).
var jsonOpts = protojson.MarshalOptions{UseProtoNames: true, AllowPartial: true}

// MarshalJSON renders the image like crit decode: {"magic", "entries"}, an
// entry's extra as an "extra" member. Raw images render as {"magic":
// "PAGES", "size": bytes, "nr_pages": pages} (or "RAW" without nr_pages).
func (img *Image) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	switch img.Magic {
	case "PAGES":
		fmt.Fprintf(&buf, `{"magic":"PAGES","size":%d,"nr_pages":%d}`, img.Size, img.Size/PageSize)
		return buf.Bytes(), nil
	case "RAW":
		fmt.Fprintf(&buf, `{"magic":"RAW","size":%d}`, img.Size)
		return buf.Bytes(), nil
	}
	magic, err := json.Marshal(img.Magic)
	if err != nil {
		return nil, err
	}
	buf.WriteString(`{"magic":`)
	buf.Write(magic)
	buf.WriteString(`,"entries":[`)
	for i, e := range img.Entries {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := jsonOpts.Marshal(e)
		if err != nil {
			// Linux names are bytes, not UTF-8, but protojson refuses
			// invalid UTF-8 in string fields: show those with U+FFFD.
			c := proto.Clone(e)
			fixUTF8(c.ProtoReflect())
			if b, err = jsonOpts.Marshal(c); err != nil {
				return nil, fmt.Errorf("entry %d: %w", i, err)
			}
		}
		b = bytes.TrimSpace(b)
		if i < len(img.Extra) && img.Extra[i] != "" {
			extra, err := json.Marshal(img.Extra[i])
			if err != nil {
				return nil, err
			}
			// Splice "extra" into the object protojson produced.
			body := bytes.TrimSpace(b[1 : len(b)-1])
			buf.WriteByte('{')
			if len(body) > 0 {
				buf.Write(body)
				buf.WriteByte(',')
			}
			buf.WriteString(`"extra":`)
			buf.Write(extra)
			buf.WriteByte('}')
			continue
		}
		buf.Write(b)
	}
	buf.WriteString("]}")
	// protojson varies its whitespace on purpose; compacting makes the
	// output stable.
	var out bytes.Buffer
	if err := json.Compact(&out, buf.Bytes()); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// fixUTF8 replaces invalid UTF-8 in every string field of m, recursively.
func fixUTF8(m protoreflect.Message) {
	fix := func(v protoreflect.Value) protoreflect.Value {
		return protoreflect.ValueOfString(strings.ToValidUTF8(v.String(), "\uFFFD"))
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				switch fd.Kind() {
				case protoreflect.StringKind:
					l.Set(i, fix(l.Get(i)))
				case protoreflect.MessageKind, protoreflect.GroupKind:
					fixUTF8(l.Get(i).Message())
				}
			}
		case fd.IsMap():
			mp := v.Map()
			type kv struct {
				k protoreflect.MapKey
				v protoreflect.Value
			}
			var all []kv
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				all = append(all, kv{k, mv})
				return true
			})
			for _, e := range all {
				k, mv := e.k, e.v
				switch fd.MapValue().Kind() {
				case protoreflect.StringKind:
					mv = fix(mv)
				case protoreflect.MessageKind, protoreflect.GroupKind:
					fixUTF8(mv.Message())
				}
				if fd.MapKey().Kind() == protoreflect.StringKind {
					mp.Clear(k)
					k = fix(k.Value()).MapKey()
				}
				mp.Set(k, mv)
			}
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, fix(v))
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			fixUTF8(v.Message())
		}
		return true
	})
}
