package images

import (
	"errors"
	"fmt"
	"math"

	pipe_data "github.com/checkpoint-restore/go-criu/v8/crit/images/pipe-data"
	tcp_stream "github.com/checkpoint-restore/go-criu/v8/crit/images/tcp-stream"
	"google.golang.org/protobuf/proto"
)

// PipeData is the buffered contents of one pipe (pipes-data.img): a
// PipeDataEntry{pipe_id, bytes} followed by the bytes themselves.
type PipeData struct {
	PipeID uint32
	Data   []byte
}

// WritePipeData writes pipes-data.img with one entry per pipe.
func (d *Dir) WritePipeData(pipes []PipeData) error {
	recs := make([]Record, len(pipes))
	for i, p := range pipes {
		if uint64(len(p.Data)) > math.MaxUint32 {
			return fmt.Errorf("pipe %d: %d bytes of data do not fit the image", p.PipeID, len(p.Data))
		}
		recs[i] = Record{
			Entry:   &pipe_data.PipeDataEntry{PipeId: proto.Uint32(p.PipeID), Bytes: proto.Uint32(uint32(len(p.Data)))},
			Payload: p.Data,
		}
	}
	return d.WriteRecords(PipesDataName, recs...)
}

// ReadPipeData reads pipes-data.img; a missing image means no pipe had data.
func (d *Dir) ReadPipeData() ([]PipeData, error) {
	entries, data, err := ReadRecords[pipe_data.PipeDataEntry](d, PipesDataName)
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]PipeData, len(entries))
	for i, e := range entries {
		out[i] = PipeData{PipeID: e.GetPipeId(), Data: data[i]}
	}
	return out, nil
}

// WriteTCPStream writes tcp-stream-INO.img: the TCP repair state of one
// socket followed by its receive and send queues. e's inq_len and outq_len
// must match the queues.
func (d *Dir) WriteTCPStream(ino uint32, e *tcp_stream.TcpStreamEntry, inq, outq []byte) error {
	if uint64(e.GetInqLen()) != uint64(len(inq)) || uint64(e.GetOutqLen()) != uint64(len(outq)) {
		return fmt.Errorf("tcp stream %x: entry declares queues of %d+%d bytes, got %d+%d",
			ino, e.GetInqLen(), e.GetOutqLen(), len(inq), len(outq))
	}
	payload := make([]byte, 0, len(inq)+len(outq))
	payload = append(append(payload, inq...), outq...)
	return d.WriteRecords(TCPStreamName(ino), Record{Entry: e, Payload: payload})
}

// ReadTCPStream reads tcp-stream-INO.img.
func (d *Dir) ReadTCPStream(ino uint32) (e *tcp_stream.TcpStreamEntry, inq, outq []byte, err error) {
	name := TCPStreamName(ino)
	entries, data, err := ReadRecords[tcp_stream.TcpStreamEntry](d, name)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(entries) != 1 {
		return nil, nil, nil, fmt.Errorf("%s: %w: %d entries, want exactly 1", name, ErrCorrupt, len(entries))
	}
	e, p := entries[0], data[0]
	return e, p[:e.GetInqLen():e.GetInqLen()], p[e.GetInqLen():], nil
}
