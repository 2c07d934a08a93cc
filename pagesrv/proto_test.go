package pagesrv

import (
	"bufio"
	"bytes"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"runtime"
	"testing"
	"time"
)

// sampleMessages has one or more messages of every type.
func sampleMessages() []Message {
	data := make([]byte, 3*pageSize)
	for i := range data {
		data[i] = byte(i)
	}
	return []Message{
		MsgHello{Flags: 0, PageSize: uint32(pageSize), MaxPages: 1024},
		MsgHelloAck{PageSize: uint32(pageSize), MaxPages: 512},
		MsgGetPages{Pid: 42, NrPages: 7, Addr: 0x7f0000001000},
		MsgPages{Pid: 42, NrPages: 3, Addr: 0x1000, Status: StatusOK, Data: data},
		MsgPages{Pid: 42, NrPages: 5, Addr: 0x1000, Status: StatusPartial,
			Runs: []Run{{NrPages: 1, Present: true}, {NrPages: 2}, {NrPages: 2, Present: true}}, Data: data},
		MsgPages{Pid: 42, NrPages: 9, Addr: 0x1000, Status: StatusNotInImage},
		MsgGetExtents{Pid: 9},
		MsgExtents{Pid: 9, Extents: []Extent{{Addr: 0x1000, NrPages: 3}, {Addr: 0x9000, NrPages: 1}}},
		MsgExtents{Pid: 9},
		MsgListFiles{},
		MsgFileList{Files: []FileInfo{{Name: "core-1.img", Size: 123, Mode: 0o600}, {Name: "x", Size: 0, Mode: 0o644}}},
		MsgFileList{},
		MsgGetFile{Name: "inventory.img"},
		MsgFileData{Offset: 4096, Data: []byte("chunk")},
		MsgFileEnd{Size: 4101, CRC32C: 0xdeadbeef},
		MsgDone{Pid: 0, Pages: 1 << 40, Bytes: 1 << 52},
		MsgDoneAck{Pid: 7},
		MsgError{Code: CodeSource, Errno: 5, Text: "read failed"},
		MsgClose{},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		flags := uint16(0)
		if m.Type() == TypeExtents || m.Type() == TypeFileList {
			flags = FlagMore
		}
		b := AppendMessage([]byte("prefix"), 77, flags, m)[len("prefix"):]
		h, got, n, err := Decode(b, pageSize)
		if err != nil {
			t.Fatalf("%v: %v", m.Type(), err)
		}
		if n != len(b) || h.ID != 77 || h.Flags != flags || h.Type != m.Type() || int(h.Length) != len(b)-HeaderSize {
			t.Fatalf("%v: header %+v, n %d of %d", m.Type(), h, n, len(b))
		}
		if !reflect.DeepEqual(normalize(got), normalize(m)) {
			t.Fatalf("%v: decoded %+v, want %+v", m.Type(), got, m)
		}
		// Every strict prefix is just short, never an error or a panic.
		for i := range b {
			if _, _, _, err := Decode(b[:i], pageSize); !errors.Is(err, ErrShort) {
				t.Fatalf("%v: prefix of %d bytes: %v", m.Type(), i, err)
			}
		}
	}
}

// normalize maps empty slices to nil for comparison.
func normalize(m Message) Message {
	v := reflect.New(reflect.TypeOf(m)).Elem()
	v.Set(reflect.ValueOf(m))
	for i := range v.NumField() {
		f := v.Field(i)
		if f.Kind() == reflect.Slice && f.Len() == 0 {
			f.Set(reflect.Zero(f.Type()))
		}
	}
	return v.Interface().(Message)
}

func TestParseHeaderRejects(t *testing.T) {
	good := AppendMessage(nil, 1, 0, MsgGetPages{Pid: 1, NrPages: 1})
	for _, tc := range []struct {
		name string
		edit func(b []byte)
		want error
	}{
		{"magic", func(b []byte) { b[0] = 'X' }, ErrBadMagic},
		{"version", func(b []byte) { b[4] = 2 }, ErrVersion},
		{"type 0", func(b []byte) { b[5] = 0 }, ErrProtocol},
		{"type 200", func(b []byte) { b[5] = 200 }, ErrProtocol},
		{"FlagMore on GetPages", func(b []byte) { b[6] = 1 }, ErrProtocol},
		{"unknown flag", func(b []byte) { b[5] = byte(TypeExtents); b[7] = 0x80 }, ErrProtocol},
		{"length too big", func(b []byte) { le.PutUint32(b[8:], 17) }, ErrTooLarge},
		{"length too small", func(b []byte) { le.PutUint32(b[8:], 15) }, ErrTooLarge},
		{"huge length", func(b []byte) { b[5] = byte(TypePages); le.PutUint32(b[8:], 0xffffffff) }, ErrTooLarge},
	} {
		b := bytes.Clone(good)
		tc.edit(b)
		if _, err := ParseHeader(b, pageSize); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	enc := func(m Message) []byte { return AppendMessage(nil, 1, 0, m) }
	partial := enc(MsgPages{Pid: 1, NrPages: 3, Status: StatusPartial,
		Runs: []Run{{NrPages: 1, Present: true}, {NrPages: 2}}, Data: make([]byte, pageSize)})
	for _, tc := range []struct {
		name string
		b    []byte
		edit func(b []byte)
	}{
		{"runs do not cover the pages", partial, func(b []byte) { le.PutUint32(b[HeaderSize+4:], 4) }},
		{"run flag", partial, func(b []byte) { b[HeaderSize+pagesFixed+4] = 3 }},
		{"empty run", partial, func(b []byte) { le.PutUint32(b[HeaderSize+pagesFixed:], 0) }},
		{"data of an absent run", partial, func(b []byte) { b[HeaderSize+pagesFixed+runSize+4] = 1 }},
		{"runs with status OK", partial, func(b []byte) { b[HeaderSize+16] = byte(StatusOK) }},
		{"unknown status", partial, func(b []byte) { b[HeaderSize+16] = 9 }},
		{"zero pages", enc(MsgPages{Pid: 1, NrPages: 1, Status: StatusNotInImage}), func(b []byte) { le.PutUint32(b[HeaderSize+4:], 0) }},
		{"extent count", enc(MsgExtents{Pid: 1, Extents: []Extent{{1, 1}}}), func(b []byte) { le.PutUint32(b[HeaderSize+4:], 2) }},
		{"file name", enc(MsgGetFile{Name: "ab"}), func(b []byte) { b[HeaderSize+2] = '/' }},
		{"file name length", enc(MsgGetFile{Name: "ab"}), func(b []byte) { b[HeaderSize] = 1 }},
		{"listed name", enc(MsgFileList{Files: []FileInfo{{Name: ".."}}}), nil},
		{"listed count", enc(MsgFileList{Files: []FileInfo{{Name: "a"}}}), func(b []byte) { b[HeaderSize] = 2 }},
		{"hello reserved", enc(MsgHello{}), func(b []byte) { b[HeaderSize+12] = 1 }},
		{"done reserved", enc(MsgDone{}), func(b []byte) { b[HeaderSize+4] = 1 }},
		{"extents reserved", enc(MsgGetExtents{Pid: 1}), func(b []byte) { b[HeaderSize+4] = 1 }},
	} {
		b := bytes.Clone(tc.b)
		if tc.edit != nil {
			tc.edit(b)
		}
		_, _, _, err := Decode(b, pageSize)
		if err == nil || errors.Is(err, ErrShort) {
			t.Errorf("%s: accepted (%v)", tc.name, err)
		}
	}
}

// TestRunsFor checks runsFor and normalizeExtents against a page bitmap.
func TestRunsFor(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	ps := uint64(pageSize)
	for iter := range 2000 {
		var ext []Extent
		bitmap := make([]bool, 300)
		for range rng.IntN(8) {
			start, n := rng.IntN(180), rng.IntN(25)
			ext = append(ext, Extent{Addr: uint64(start) * ps, NrPages: uint64(n)})
			for i := start; i < min(start+n, len(bitmap)); i++ {
				bitmap[i] = true
			}
		}
		norm, err := normalizeExtents(ext, ps)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(norm); i++ {
			if norm[i].Addr <= norm[i-1].Addr+norm[i-1].NrPages*ps {
				t.Fatalf("iter %d: extents not merged: %+v", iter, norm)
			}
		}
		start, n := rng.IntN(190), 1+rng.IntN(60)
		runs, present := runsFor(nil, norm, uint64(start)*ps, uint32(n), ps)
		page, cnt := start, 0
		for i, r := range runs {
			if r.NrPages == 0 || (i > 0 && runs[i-1].Present == r.Present) {
				t.Fatalf("iter %d: runs not minimal: %+v", iter, runs)
			}
			for range r.NrPages {
				want := page < len(bitmap) && bitmap[page]
				if r.Present != want {
					t.Fatalf("iter %d: page %d present=%v, want %v (ext %+v, runs %+v)", iter, page, r.Present, want, ext, runs)
				}
				if want {
					cnt++
				}
				page++
			}
		}
		if page != start+n || cnt != present {
			t.Fatalf("iter %d: runs cover %d pages (%d present), want %d (%d)", iter, page-start, present, n, cnt)
		}
	}
	if _, err := normalizeExtents([]Extent{{Addr: ^uint64(0) &^ (ps - 1), NrPages: 2}}, ps); err == nil {
		t.Fatal("wrapping extent accepted")
	}
}

// allocated runs f and returns the bytes it allocated. The counter is
// process-wide and the fuzzing engine allocates too, so f runs a few times
// and the smallest count is taken: noise only ever adds.
func allocated(f func()) uint64 {
	least := ^uint64(0)
	for range 3 {
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		f()
		runtime.ReadMemStats(&b)
		least = min(least, b.TotalAlloc-a.TotalAlloc)
	}
	return least
}

func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		f.Add(AppendMessage(nil, 1, 0, m))
	}
	f.Add(AppendMessage(AppendMessage(nil, 1, FlagMore, MsgExtents{Pid: 1}), 2, 0, MsgClose{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		var h Header
		var m Message
		var n int
		var err error
		alloc := allocated(func() { h, m, n, err = Decode(b, pageSize) })
		// Decoded fields are bounded by the bytes given; a lying length
		// must not make Decode allocate what is not there.
		if bound := 4*uint64(len(b)) + 1024; alloc > bound {
			t.Fatalf("allocated %d bytes decoding %d", alloc, len(b))
		}
		if err != nil {
			return
		}
		// Canonical encoding: what decodes re-encodes to the same bytes.
		if again := AppendMessage(nil, h.ID, h.Flags, m); !bytes.Equal(again, b[:n]) {
			t.Fatalf("%v: re-encoded\n%x\nfrom\n%x", h.Type, again, b[:n])
		}
	})
}

// fuzzConn feeds bytes to a client as if from a server.
type fuzzConn struct{ *bytes.Reader }

func (fuzzConn) Write(p []byte) (int, error)      { return len(p), nil }
func (fuzzConn) Close() error                     { return nil }
func (fuzzConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (fuzzConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (fuzzConn) SetDeadline(time.Time) error      { return nil }
func (fuzzConn) SetReadDeadline(time.Time) error  { return nil }
func (fuzzConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzClientReader runs the client's streaming reader over arbitrary server
// bytes with requests of every kind pending.
func FuzzClientReader(f *testing.F) {
	data := make([]byte, 4*pageSize)
	seed := AppendMessage(nil, 1, 0, MsgPages{Pid: 100, NrPages: 4, Addr: base, Status: StatusPartial,
		Runs: []Run{{NrPages: 1, Present: true}, {NrPages: 3}}, Data: data[:pageSize]})
	seed = AppendMessage(seed, 2, FlagMore, MsgExtents{Pid: 100, Extents: []Extent{{Addr: base, NrPages: 1}}})
	seed = AppendMessage(seed, 2, 0, MsgExtents{Pid: 100})
	seed = AppendMessage(seed, 3, 0, MsgFileList{Files: []FileInfo{{Name: "a", Size: 1}}})
	seed = AppendMessage(seed, 4, 0, MsgFileData{Offset: 0, Data: []byte("x")})
	seed = AppendMessage(seed, 4, 0, MsgFileEnd{Size: 1, CRC32C: 0})
	seed = AppendMessage(seed, 5, 0, MsgDoneAck{})
	f.Add(seed)
	f.Add(AppendMessage(nil, 1, 0, MsgPages{Pid: 100, NrPages: 4, Addr: base, Data: data}))
	f.Add(AppendMessage(nil, 0, 0, MsgError{Code: CodeProtocol, Text: "x"}))
	devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { devnull.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		var c *Client
		var call *Call
		setup := func() {
			c = &Client{conn: fuzzConn{bytes.NewReader(b)}, pageSize: pageSize, maxPages: MaxRequestBytes / pageSize,
				timeout: -1, remote: "fuzz", pending: map[uint32]*pending{}, readerDone: make(chan struct{})}
			c.br = bufio.NewReaderSize(timedReader{c}, 4<<10)
			call = &Call{Pid: 100, Addr: base, Dst: make([]byte, 4*pageSize), Done: make(chan *Call, 1)}
			c.register(&pending{want: TypePages, call: call})
			c.register(&pending{want: TypeExtents, pid: 100, done: make(chan error, 1)})
			c.register(&pending{want: TypeFileList, done: make(chan error, 1)})
			c.register(&pending{want: TypeFileData, sink: &fileSink{f: devnull}, done: make(chan error, 1)})
			c.register(&pending{want: TypeDoneAck, done: make(chan error, 1)})
		}
		// Setup allocates a fixed amount; the reader must add at most a
		// bounded multiple of what it was sent.
		alloc := allocated(func() { setup(); c.readLoop() })
		if bound := 4*uint64(len(b)) + 128<<10; alloc > bound {
			t.Fatalf("allocated %d bytes reading %d", alloc, len(b))
		}
		select {
		case <-call.Done:
		default:
			t.Fatal("pending call not finished when the reader stopped")
		}
		if c.err == nil {
			t.Fatal("reader stopped without an error")
		}
	})
}
