package images

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bpfmap_data "github.com/checkpoint-restore/go-criu/v8/crit/images/bpfmap-data"
	ghost_file "github.com/checkpoint-restore/go-criu/v8/crit/images/ghost-file"
	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	sk_packet "github.com/checkpoint-restore/go-criu/v8/crit/images/sk-packet"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
)

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func TestPipeData(t *testing.T) {
	d := newDir(t)
	// A missing image means no pipe had data.
	if got, err := d.ReadPipeData(); err != nil || len(got) != 0 {
		t.Fatalf("missing pipes-data: %v %v", got, err)
	}
	want := []PipeData{
		{PipeID: 5, Data: []byte("hello")},
		{PipeID: 6, Data: nil},
		{PipeID: 7, Data: pattern(200<<10, 3)}, // above the coalescing threshold
		{PipeID: 8, Data: []byte{0}},
	}
	if err := d.WritePipeData(want); err != nil {
		t.Fatal(err)
	}
	got, err := d.ReadPipeData()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d pipes, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].PipeID != want[i].PipeID || !bytes.Equal(got[i].Data, want[i].Data) {
			t.Errorf("pipe %d: id %d, %d bytes", i, got[i].PipeID, len(got[i].Data))
		}
	}

	// crit decodes the entries and the data after them.
	img := critDecode(t, filepath.Join(d.Path(), PipesDataName), &pipe_data.PipeDataEntry{}, false)
	if img.Magic != "PIPES_DATA" || len(img.Entries) != len(want) {
		t.Fatalf("crit: %s, %d entries", img.Magic, len(img.Entries))
	}
	for i, e := range img.Entries {
		pe := e.Message.(*pipe_data.PipeDataEntry)
		data, err := base64.StdEncoding.DecodeString(e.Extra)
		if err != nil || pe.GetPipeId() != want[i].PipeID || !bytes.Equal(data, want[i].Data) {
			t.Errorf("crit pipe %d: %v, %d bytes, %v", i, pe, len(data), err)
		}
	}

	// Plain Read skips the data.
	entries, err := Read[pipe_data.PipeDataEntry](d, PipesDataName)
	if err != nil || len(entries) != len(want) || entries[2].GetBytes() != 200<<10 {
		t.Fatalf("Read skipping data: %v %v", entries, err)
	}

	// Truncating the data of the last pipe is corruption.
	path := filepath.Join(d.Path(), PipesDataName)
	b := readFile(t, path)
	if err := os.WriteFile(path, b[:len(b)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadPipeData(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "entry data of 1 bytes exceeds the 0 bytes left") {
		t.Errorf("truncated pipe data: %v", err)
	}
}

func TestRecordsErrors(t *testing.T) {
	d := newDir(t)
	e := &pipe_data.PipeDataEntry{PipeId: proto.Uint32(1), Bytes: proto.Uint32(3)}
	if err := d.WriteRecords(PipesDataName, Record{Entry: e, Payload: []byte("ab")}); err == nil || !strings.Contains(err.Error(), "declares 3 bytes of data but has 2") {
		t.Errorf("size mismatch: %v", err)
	}
	if err := d.WriteRecords(PipesDataName, Record{Entry: &sk_packet.SkPacketEntry{IdFor: proto.Uint32(1), Length: proto.Uint32(0)}}); err == nil {
		t.Error("wrong entry type accepted")
	}
	if err := d.WriteRecords(PstreeName); err == nil || !strings.Contains(err.Error(), "use Write") {
		t.Errorf("WriteRecords on a plain image: %v", err)
	}
	if _, _, err := ReadRecords[pipe_data.PipeDataEntry](d, FilesName); err == nil {
		t.Error("ReadRecords on a plain image succeeded")
	}
	if d.Exists(PipesDataName) {
		t.Error("failed WriteRecords left an image")
	}
	noTempFiles(t, d)
}

func TestSkQueuesAndBpfmap(t *testing.T) {
	d := newDir(t)
	var recs []Record
	for i := range 3 {
		p := pattern(10*i+1, byte(i))
		recs = append(recs, Record{Entry: &sk_packet.SkPacketEntry{IdFor: proto.Uint32(uint32(i)), Length: proto.Uint32(uint32(len(p)))}, Payload: p})
	}
	if err := d.WriteRecords(SkQueuesName, recs...); err != nil {
		t.Fatal(err)
	}
	entries, data, err := ReadRecords[sk_packet.SkPacketEntry](d, SkQueuesName)
	if err != nil || len(entries) != 3 {
		t.Fatalf("sk-queues: %d, %v", len(entries), err)
	}
	img := critDecode(t, filepath.Join(d.Path(), SkQueuesName), &sk_packet.SkPacketEntry{}, false)
	for i := range recs {
		c, _ := base64.StdEncoding.DecodeString(img.Entries[i].Extra)
		if !proto.Equal(entries[i], recs[i].Entry) || !bytes.Equal(data[i], recs[i].Payload) || !bytes.Equal(c, recs[i].Payload) {
			t.Errorf("packet %d differs", i)
		}
	}

	keys, vals := pattern(16, 1), pattern(32, 2)
	be := &bpfmap_data.BpfmapDataEntry{MapId: proto.Uint32(9), KeysBytes: proto.Uint32(16), ValuesBytes: proto.Uint32(32), Count: proto.Uint32(4)}
	if err := d.WriteRecords(BpfmapDataName, Record{Entry: be, Payload: append(bytes.Clone(keys), vals...)}); err != nil {
		t.Fatal(err)
	}
	bes, bdata, err := ReadRecords[bpfmap_data.BpfmapDataEntry](d, BpfmapDataName)
	if err != nil || len(bes) != 1 || !bytes.Equal(bdata[0], append(keys, vals...)) {
		t.Fatalf("bpfmap-data: %v %v", bes, err)
	}
}

func TestTCPStream(t *testing.T) {
	d := newDir(t)
	inq, outq := []byte("received but unread"), pattern(3000, 9)
	e := filled(&tcp_stream.TcpStreamEntry{}, 1)
	e.InqLen = proto.Uint32(uint32(len(inq)))
	e.OutqLen = proto.Uint32(uint32(len(outq)))
	const ino = 0xabc
	if err := d.WriteTCPStream(ino, e, inq, outq); err != nil {
		t.Fatal(err)
	}
	if !d.Exists("tcp-stream-abc.img") {
		t.Fatal("tcp-stream-abc.img missing")
	}
	ge, gin, gout, err := d.ReadTCPStream(ino)
	if err != nil || !proto.Equal(ge, e) || !bytes.Equal(gin, inq) || !bytes.Equal(gout, outq) {
		t.Fatalf("round trip: %v %q %d %v", ge, gin, len(gout), err)
	}
	// Appending to the in queue must not clobber the out queue.
	_ = append(gin, 'X')
	if gout[0] != outq[0] {
		t.Error("in queue slice aliases the out queue")
	}
	img := critDecode(t, filepath.Join(d.Path(), TCPStreamName(ino)), &tcp_stream.TcpStreamEntry{}, false)
	var q struct {
		InQ  string `json:"in_q"`
		OutQ string `json:"out_q"`
	}
	if err := json.Unmarshal([]byte(img.Entries[0].Extra), &q); err != nil {
		t.Fatal(err)
	}
	ci, _ := base64.StdEncoding.DecodeString(q.InQ)
	co, _ := base64.StdEncoding.DecodeString(q.OutQ)
	if !bytes.Equal(ci, inq) || !bytes.Equal(co, outq) {
		t.Error("crit sees different queues")
	}
	if err := d.WriteTCPStream(1, e, inq[1:], outq); err == nil {
		t.Error("queue length mismatch accepted")
	}
}

func TestGhostFile(t *testing.T) {
	d := newDir(t)
	e := &ghost_file.GhostFileEntry{Uid: proto.Uint32(1), Gid: proto.Uint32(2), Mode: proto.Uint32(0o100644), Size: proto.Uint64(1 << 20)}
	chunks := []GhostChunk{{Off: 0, Data: pattern(100, 1)}, {Off: 8192, Data: pattern(5000, 2)}, {Off: 1<<20 - 10, Data: pattern(10, 3)}}
	if err := d.WriteGhostFile(0x1f, e, chunks); err != nil {
		t.Fatal(err)
	}
	if e.Chunks != nil {
		t.Error("WriteGhostFile modified the caller's entry")
	}
	ge, gc, err := d.ReadGhostFile(0x1f)
	if err != nil {
		t.Fatal(err)
	}
	if !ge.GetChunks() || ge.GetSize() != 1<<20 || len(gc) != len(chunks) {
		t.Fatalf("got %v, %d chunks", ge, len(gc))
	}
	for i := range chunks {
		if gc[i].Off != chunks[i].Off || !bytes.Equal(gc[i].Data, chunks[i].Data) {
			t.Errorf("chunk %d differs", i)
		}
	}
	// crit reads the chunked layout.
	img := critDecode(t, filepath.Join(d.Path(), GhostFileName(0x1f)), nil, false)
	if len(img.Entries) != 1+len(chunks) {
		t.Fatalf("crit: %d entries", len(img.Entries))
	}
	// go-criu v8.3.0's decodeGhostFile appends &entry of one variable it
	// reuses, so every entry it returns (the file entry too) shows the last
	// chunk: only that one can be compared.
	last := chunks[len(chunks)-1]
	ce := img.Entries[len(chunks)].Message.(*ghost_file.GhostChunkEntry)
	data, _ := base64.StdEncoding.DecodeString(img.Entries[len(chunks)].Extra)
	if ce.GetOff() != last.Off || ce.GetLen() != uint64(len(last.Data)) || !bytes.Equal(data, last.Data) {
		t.Errorf("crit last chunk: %v", ce)
	}

	// The old layout: contents right after the entry, no chunks.
	k, _ := kindOf(GhostFileName(2))
	b, _ := appendHeader(nil, k)
	b, _ = appendEntry(b, &ghost_file.GhostFileEntry{Uid: proto.Uint32(0), Gid: proto.Uint32(0), Mode: proto.Uint32(0o100600)})
	b = append(b, "old contents"...)
	if err := os.WriteFile(filepath.Join(d.Path(), GhostFileName(2)), b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, gc, err = d.ReadGhostFile(2)
	if err != nil || len(gc) != 1 || gc[0].Off != 0 || string(gc[0].Data) != "old contents" {
		t.Fatalf("old layout: %v %v", gc, err)
	}

	for _, bad := range [][]GhostChunk{
		{{Off: 10, Data: []byte("ab")}, {Off: 11, Data: []byte("c")}},
		{{Off: 1 << 20, Data: []byte("x")}},
	} {
		if err := d.WriteGhostFile(3, e, bad); err == nil {
			t.Errorf("bad chunks %v accepted", bad)
		}
	}
	if _, err := Read[ghost_file.GhostFileEntry](d, GhostFileName(0x1f)); err == nil {
		t.Error("generic Read of a ghost file succeeded")
	}
}
