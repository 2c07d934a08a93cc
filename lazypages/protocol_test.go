package lazypages

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

func TestProtocolRoundTrip(t *testing.T) {
	many := make([]Range, maxRangesPerMsg)
	for i := range many {
		many[i] = Range{Start: uint64(i) * 2 * pageSize, Len: pageSize}
	}
	msgs := []*message{
		{Type: msgHello},
		{Type: msgHello, ImagesID: make([]byte, imagesIDSize)},
		{Type: msgDone},
		{Type: msgGuardHello},
		{Type: msgGuardFinished},
		{Type: msgAck, Status: ackOK},
		{Type: msgAck, Status: ackError, Text: "pid 12: no pagemap"},
		{Type: msgRegister, Pid: 4242, Flags: flagHasPidfd, Total: 3, Ranges: []Range{{0x1000, 0x2000}, {0x8000, 0x1000}}},
		{Type: msgRegister, Pid: 1, Total: uint32(len(many)), Ranges: many},
		{Type: msgRanges, Ranges: []Range{{0x10000, 0x1000}}},
		{Type: msgGuardAdd, ID: 7, Pid: 99, Flags: flagHasPidfd},
		{Type: msgGuardAdd, ID: 8, Pid: 0},
		{Type: msgGuardPidfd, ID: 8, Pid: 100},
		{Type: msgGuardRelease, ID: 7},
	}
	for _, m := range msgs {
		b, err := encode(m)
		if err != nil {
			t.Fatalf("encode %v: %v", m.Type, err)
		}
		if len(b) > maxMsgSize {
			t.Errorf("%v: %d bytes > maxMsgSize", m.Type, len(b))
		}
		got, err := decode(b)
		if err != nil {
			t.Fatalf("decode %v: %v", m.Type, err)
		}
		if got.Ranges == nil && m.Ranges == nil {
			got.Ranges = nil
		}
		if len(got.Ranges) == 0 && len(m.Ranges) == 0 {
			got.Ranges, m.Ranges = nil, nil
		}
		if !reflect.DeepEqual(got, m) {
			t.Errorf("round trip %v:\n got %+v\nwant %+v", m.Type, got, m)
		}
	}
}

func TestProtocolRejects(t *testing.T) {
	good, _ := encode(&message{Type: msgRegister, Pid: 5, Total: 1, Ranges: []Range{{0x1000, 0x1000}}})
	mutate := func(f func(b []byte) []byte) []byte {
		b := append([]byte(nil), good...)
		return f(b)
	}
	le := binary.LittleEndian
	cases := map[string][]byte{
		"short":         good[:5],
		"magic":         mutate(func(b []byte) []byte { b[0] ^= 1; return b }),
		"type":          mutate(func(b []byte) []byte { le.PutUint16(b[6:], 99); return b }),
		"truncated":     good[:len(good)-1],
		"trailing":      append(append([]byte(nil), good...), 0),
		"count":         mutate(func(b []byte) []byte { le.PutUint32(b[headerSize+12:], 2); return b }),
		"huge count":    mutate(func(b []byte) []byte { le.PutUint32(b[headerSize+12:], 1<<31); return b }),
		"pid":           mutate(func(b []byte) []byte { le.PutUint32(b[headerSize:], 0); return b }),
		"flags":         mutate(func(b []byte) []byte { le.PutUint32(b[headerSize+4:], 6); return b }),
		"total < count": mutate(func(b []byte) []byte { le.PutUint32(b[headerSize+8:], 0); return b }),
	}
	for name, b := range cases {
		if _, err := decode(b); !errors.Is(err, errProto) {
			t.Errorf("%s: decode = %v, want protocol error", name, err)
		}
	}
	ver := mutate(func(b []byte) []byte { le.PutUint16(b[4:], protoVersion-1); return b })
	if _, err := decode(ver); !errors.Is(err, ErrVersion) {
		t.Errorf("version %d: %v", protoVersion-1, err)
	}
	hello, _ := encode(&message{Type: msgHello, ImagesID: make([]byte, imagesIDSize)})
	if _, err := decode(hello[:len(hello)-1]); !errors.Is(err, errProto) {
		t.Errorf("hello with a short dump id: %v", err)
	}
	if _, err := encode(&message{Type: msgHello, ImagesID: []byte{1}}); !errors.Is(err, errProto) {
		t.Errorf("encoded a 1-byte dump id: %v", err)
	}
	if _, err := encode(&message{Type: msgRanges, Ranges: make([]Range, maxRangesPerMsg+1)}); err == nil {
		t.Error("encoded too many ranges")
	}
}

func TestCheckRanges(t *testing.T) {
	ok := []Range{{0x1000, 0x1000}, {0x2000, 0x3000}}
	if err := checkRanges(ok); err != nil {
		t.Errorf("valid ranges: %v", err)
	}
	for name, rs := range map[string][]Range{
		"unaligned": {{0x1001, 0x1000}},
		"empty":     {{0x1000, 0}},
		"overlap":   {{0x1000, 0x2000}, {0x2000, 0x1000}},
		"unsorted":  {{0x5000, 0x1000}, {0x1000, 0x1000}},
		"wrap":      {{^uint64(0) &^ (pageSize - 1), 2 * pageSize}},
	} {
		if err := checkRanges(rs); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzDecode feeds arbitrary datagrams to the decoder: it must never
// panic, and whatever it accepts must re-encode to the same bytes.
func FuzzDecode(f *testing.F) {
	for _, m := range []*message{
		{Type: msgHello},
		{Type: msgAck, Status: ackError, Text: "x"},
		{Type: msgHello, ImagesID: make([]byte, imagesIDSize)},
		{Type: msgRegister, Pid: 3, Flags: flagHasPidfd, Total: 2, Ranges: []Range{{0x1000, 0x1000}}},
		{Type: msgRanges, Ranges: []Range{{0x1000, 0x1000}}},
		{Type: msgGuardAdd, ID: 1, Pid: 2, Flags: flagHasPidfd},
		{Type: msgGuardRelease, ID: 1},
	} {
		b, _ := encode(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		again, err := encode(m)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, err)
		}
		if string(again) != string(b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, again)
		}
		if n := m.wantFds(); n < 0 || n > 2 {
			t.Fatalf("wantFds %d", n)
		}
	})
}
