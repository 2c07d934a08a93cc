package images

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// TestMain fails the run if the tests leak file descriptors.
func TestMain(m *testing.M) {
	before := openFds()
	code := m.Run()
	if after := openFds(); code == 0 && len(after) > len(before) {
		fmt.Fprintf(os.Stderr, "leaked file descriptors: before %v, after %v\n", before, after)
		code = 1
	}
	os.Exit(code)
}

func openFds() []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		// Skip the descriptor ReadDir itself had open and epoll/pipes of
		// the runtime.
		if strings.HasPrefix(target, "anon_inode:") || strings.HasPrefix(target, "pipe:") || target == "" {
			continue
		}
		out = append(out, target)
	}
	sort.Strings(out)
	return out
}

// fill sets every required field of m (recursively), with values derived
// from seed so that different seeds give different messages, plus the
// optional scalars with the same values so that the round trip covers more
// than the minimum.
func fill(m protoreflect.Message, seed int) {
	fields := m.Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil {
			continue
		}
		required := fd.Cardinality() == protoreflect.Required
		if fd.IsList() || fd.IsMap() {
			continue
		}
		if fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind {
			// Sub-messages only when required: recursive optional
			// messages could nest forever.
			if required {
				fill(m.Mutable(fd).Message(), seed+i)
			}
			continue
		}
		v := seed + i
		var val protoreflect.Value
		switch fd.Kind() {
		case protoreflect.BoolKind:
			val = protoreflect.ValueOfBool(v%2 == 1)
		case protoreflect.EnumKind:
			vals := fd.Enum().Values()
			val = protoreflect.ValueOfEnum(vals.Get(v % vals.Len()).Number())
		case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
			val = protoreflect.ValueOfInt32(int32(v))
		case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
			val = protoreflect.ValueOfInt64(int64(v) << 20)
		case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
			val = protoreflect.ValueOfUint32(uint32(v))
		case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
			val = protoreflect.ValueOfUint64(uint64(v) << 24)
		case protoreflect.FloatKind:
			val = protoreflect.ValueOfFloat32(float32(v) / 2)
		case protoreflect.DoubleKind:
			val = protoreflect.ValueOfFloat64(float64(v) / 4)
		case protoreflect.StringKind:
			val = protoreflect.ValueOfString(fmt.Sprintf("%s-%d", fd.Name(), v))
		case protoreflect.BytesKind:
			val = protoreflect.ValueOfBytes([]byte(fmt.Sprintf("b%d", v)))
		default:
			continue
		}
		if required || fd.HasPresence() {
			m.Set(fd, val)
		}
	}
}

// filled returns a new message of m's type with fill applied.
func filled[M proto.Message](m M, seed int) M {
	fill(m.ProtoReflect(), seed)
	return m
}

func newDir(t testing.TB) *Dir {
	t.Helper()
	d, err := Create(filepath.Join(t.TempDir(), "img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// sampleName returns a file name of kind k.
func sampleName(k *kind) string {
	suffix := ".img"
	if k.bare {
		suffix = ""
	}
	switch k.arg {
	case 'u':
		return k.prefix + "42" + suffix
	case 'x':
		return k.prefix + "2a" + suffix
	case 's':
		return k.prefix + "dump" + suffix
	}
	return k.prefix + suffix
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// noTempFiles fails if a temporary file was left in d.
func noTempFiles(t *testing.T, d *Dir) {
	t.Helper()
	ents, err := os.ReadDir(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}
