package pagesrv

import (
	"encoding/binary"
	"fmt"
)

// Message is one typed protocol message body. The set is closed: the
// messages of this file are all there is.
type Message interface {
	Type() Type
	appendBody(b []byte) []byte
}

var le = binary.LittleEndian

// MsgHello opens a session (client -> server).
type MsgHello struct {
	Flags    uint32 // feature flags the client wants; none defined in version 1
	PageSize uint32 // the client's page size; must equal the server's
	MaxPages uint32 // the largest GetPages the client will send (0: any)
}

// MsgHelloAck accepts a session (server -> client).
type MsgHelloAck struct {
	Flags    uint32 // features granted (subset of the client's)
	PageSize uint32
	MaxPages uint32 // the largest GetPages the server accepts
}

// MsgGetPages asks for NrPages pages of process Pid starting at Addr.
type MsgGetPages struct {
	Pid     uint32
	NrPages uint32
	Addr    uint64
}

// Page status of a Pages reply.
const (
	StatusOK         uint16 = 0 // every page present, data follows
	StatusPartial    uint16 = 1 // runs say which pages are present; data of present pages follows
	StatusNotInImage uint16 = 2 // no page of the range is in the image, no data
)

// Run is a stretch of pages inside a Pages reply that is either present
// (its bytes are in Data, in order) or not in the image (no bytes sent).
type Run struct {
	NrPages uint32
	Present bool
}

const (
	pagesFixed = 24
	runSize    = 8
	extentSize = 16
)

// MsgPages answers a GetPages (same id). Data holds the present pages only.
type MsgPages struct {
	Pid     uint32
	NrPages uint32
	Addr    uint64
	Status  uint16
	Runs    []Run // only with StatusPartial; their NrPages sum to NrPages
	Data    []byte
}

// MsgGetExtents asks which pages of Pid exist.
type MsgGetExtents struct{ Pid uint32 }

// MsgExtents is one chunk of the reply to GetExtents.
type MsgExtents struct {
	Pid     uint32
	Extents []Extent
}

// MsgListFiles asks for the list of files the server offers.
type MsgListFiles struct{}

// FileInfo describes one served file.
type FileInfo struct {
	Name string
	Size uint64
	Mode uint32 // permission bits
}

// MsgFileList is one chunk of the reply to ListFiles.
type MsgFileList struct{ Files []FileInfo }

// MsgGetFile asks for the contents of one served file.
type MsgGetFile struct{ Name string }

// MsgFileData carries bytes of a file at Offset.
type MsgFileData struct {
	Offset uint64
	Data   []byte
}

// MsgFileEnd ends a file transfer; Size and CRC32C cover the whole file.
type MsgFileEnd struct {
	Size   uint64
	CRC32C uint32
}

// MsgDone tells the server that every page of Pid (0: of every process the
// client worked on) is in place; the server answers DoneAck.
type MsgDone struct {
	Pid   uint32
	Pages uint64 // pages the client received (statistics)
	Bytes uint64 // bytes the client received (statistics)
}

// MsgDoneAck acknowledges a Done.
type MsgDoneAck struct{ Pid uint32 }

// MsgError reports a failed request (its id) or, with id 0, a protocol error
// after which the server closes the connection.
type MsgError struct {
	Code  ErrorCode
	Errno uint32 // the errno behind the failure, 0 if none
	Text  string
}

// MsgClose ends the session.
type MsgClose struct{}

func (MsgHello) Type() Type      { return TypeHello }
func (MsgHelloAck) Type() Type   { return TypeHelloAck }
func (MsgGetPages) Type() Type   { return TypeGetPages }
func (MsgPages) Type() Type      { return TypePages }
func (MsgGetExtents) Type() Type { return TypeGetExtents }
func (MsgExtents) Type() Type    { return TypeExtents }
func (MsgListFiles) Type() Type  { return TypeListFiles }
func (MsgFileList) Type() Type   { return TypeFileList }
func (MsgGetFile) Type() Type    { return TypeGetFile }
func (MsgFileData) Type() Type   { return TypeFileData }
func (MsgFileEnd) Type() Type    { return TypeFileEnd }
func (MsgDone) Type() Type       { return TypeDone }
func (MsgDoneAck) Type() Type    { return TypeDoneAck }
func (MsgError) Type() Type      { return TypeError }
func (MsgClose) Type() Type      { return TypeClose }

func (m MsgHello) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, m.Flags)
	b = le.AppendUint32(b, m.PageSize)
	b = le.AppendUint32(b, m.MaxPages)
	return le.AppendUint32(b, 0)
}

func (m MsgHelloAck) appendBody(b []byte) []byte {
	return MsgHello(m).appendBody(b)
}

func (m MsgGetPages) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, m.Pid)
	b = le.AppendUint32(b, m.NrPages)
	return le.AppendUint64(b, m.Addr)
}

func (m MsgPages) appendBody(b []byte) []byte {
	b = appendPagesMeta(b, m.Pid, m.NrPages, m.Addr, m.Status, m.Runs)
	return append(b, m.Data...)
}

func appendPagesMeta(b []byte, pid, nrPages uint32, addr uint64, status uint16, runs []Run) []byte {
	b = le.AppendUint32(b, pid)
	b = le.AppendUint32(b, nrPages)
	b = le.AppendUint64(b, addr)
	b = le.AppendUint16(b, status)
	b = le.AppendUint16(b, 0)
	b = le.AppendUint32(b, uint32(len(runs)))
	for _, r := range runs {
		b = le.AppendUint32(b, r.NrPages)
		var f uint32
		if r.Present {
			f = 1
		}
		b = le.AppendUint32(b, f)
	}
	return b
}

func (m MsgGetExtents) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, m.Pid)
	return le.AppendUint32(b, 0)
}

func (m MsgExtents) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, m.Pid)
	b = le.AppendUint32(b, uint32(len(m.Extents)))
	for _, e := range m.Extents {
		b = le.AppendUint64(b, e.Addr)
		b = le.AppendUint64(b, e.NrPages)
	}
	return b
}

func (MsgListFiles) appendBody(b []byte) []byte { return b }

func (m MsgFileList) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, uint32(len(m.Files)))
	for _, f := range m.Files {
		b = appendFileInfo(b, f)
	}
	return b
}

func fileInfoSize(f FileInfo) int { return 14 + len(f.Name) }

func appendFileInfo(b []byte, f FileInfo) []byte {
	b = le.AppendUint64(b, f.Size)
	b = le.AppendUint32(b, f.Mode)
	b = le.AppendUint16(b, uint16(len(f.Name)))
	return append(b, f.Name...)
}

func (m MsgGetFile) appendBody(b []byte) []byte {
	b = le.AppendUint16(b, uint16(len(m.Name)))
	return append(b, m.Name...)
}

func (m MsgFileData) appendBody(b []byte) []byte {
	b = le.AppendUint64(b, m.Offset)
	return append(b, m.Data...)
}

func (m MsgFileEnd) appendBody(b []byte) []byte {
	b = le.AppendUint64(b, m.Size)
	b = le.AppendUint32(b, m.CRC32C)
	return le.AppendUint32(b, 0)
}

func (m MsgDone) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, m.Pid)
	b = le.AppendUint32(b, 0)
	b = le.AppendUint64(b, m.Pages)
	return le.AppendUint64(b, m.Bytes)
}

func (m MsgDoneAck) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, m.Pid)
	return le.AppendUint32(b, 0)
}

func (m MsgError) appendBody(b []byte) []byte {
	b = le.AppendUint32(b, uint32(m.Code))
	b = le.AppendUint32(b, m.Errno)
	t := m.Text
	if len(t) > MaxErrorText {
		t = t[:MaxErrorText]
	}
	return append(b, t...)
}

func (MsgClose) appendBody(b []byte) []byte { return b }

// AppendMessage appends the encoding of m (header and body) to b.
func AppendMessage(b []byte, id uint32, flags uint16, m Message) []byte {
	start := len(b)
	b = append(b, make([]byte, HeaderSize)...)
	b = m.appendBody(b)
	putHeader(b[start:], Header{Version: Version, Type: m.Type(), Flags: flags,
		Length: uint32(len(b) - start - HeaderSize), ID: id})
	return b
}

// Decode decodes one message from the start of b. It returns ErrShort when b
// does not hold a whole message yet (but holds no invalid header either), and
// the number of bytes the message used. Slices in the result (Pages.Data,
// FileData.Data) alias b; other fields are copied, and their size is bounded
// by the message length, itself bounded by ParseHeader.
func Decode(b []byte, pageSize int) (Header, Message, int, error) {
	h, err := ParseHeader(b, pageSize)
	if err != nil {
		return h, nil, 0, err
	}
	n := HeaderSize + int(h.Length)
	if len(b) < n {
		return h, nil, 0, ErrShort
	}
	m, err := decodeBody(h, b[HeaderSize:n], pageSize)
	if err != nil {
		return h, nil, 0, fmt.Errorf("%v message: %w", h.Type, err)
	}
	return h, m, n, nil
}

// decodeBody decodes a body whose length ParseHeader has already bounded.
func decodeBody(h Header, b []byte, pageSize int) (Message, error) {
	if len(b) != int(h.Length) {
		return nil, ErrShort
	}
	switch h.Type {
	case TypeHello, TypeHelloAck:
		m := MsgHello{Flags: le.Uint32(b), PageSize: le.Uint32(b[4:]), MaxPages: le.Uint32(b[8:])}
		if le.Uint32(b[12:]) != 0 {
			return nil, fmt.Errorf("%w: reserved field set", ErrProtocol)
		}
		if h.Type == TypeHelloAck {
			return MsgHelloAck(m), nil
		}
		return m, nil
	case TypeGetPages:
		return MsgGetPages{Pid: le.Uint32(b), NrPages: le.Uint32(b[4:]), Addr: le.Uint64(b[8:])}, nil
	case TypePages:
		m, nruns, err := decodePagesMeta(b, pageSize)
		if err != nil {
			return nil, err
		}
		if len(b) < pagesFixed+nruns*runSize {
			return nil, fmt.Errorf("%w: runs truncated", ErrProtocol)
		}
		runs, present, err := decodeRuns(b[pagesFixed:], nruns, &m, make([]Run, 0, nruns))
		if err != nil {
			return nil, err
		}
		if len(runs) > 0 {
			m.Runs = runs
		}
		data := b[pagesFixed+runSize*len(runs):]
		if len(data) != present*pageSize {
			return nil, fmt.Errorf("%w: %d data bytes for %d present pages", ErrProtocol, len(data), present)
		}
		m.Data = data
		return m, nil
	case TypeGetExtents:
		if le.Uint32(b[4:]) != 0 {
			return nil, fmt.Errorf("%w: reserved field set", ErrProtocol)
		}
		return MsgGetExtents{Pid: le.Uint32(b)}, nil
	case TypeExtents:
		pid, n := le.Uint32(b), le.Uint32(b[4:])
		if uint64(len(b)) != 8+uint64(n)*extentSize {
			return nil, fmt.Errorf("%w: %d extents in %d bytes", ErrProtocol, n, len(b))
		}
		ext := make([]Extent, n)
		for i := range ext {
			p := b[8+i*extentSize:]
			ext[i] = Extent{Addr: le.Uint64(p), NrPages: le.Uint64(p[8:])}
		}
		return MsgExtents{Pid: pid, Extents: ext}, nil
	case TypeListFiles:
		return MsgListFiles{}, nil
	case TypeFileList:
		n := le.Uint32(b)
		rest := b[4:]
		// Each entry takes at least 15 bytes: check before allocating.
		if uint64(n)*15 > uint64(len(rest)) {
			return nil, fmt.Errorf("%w: %d files in %d bytes", ErrProtocol, n, len(rest))
		}
		files := make([]FileInfo, n)
		for i := range files {
			if len(rest) < 14 {
				return nil, fmt.Errorf("%w: file entry truncated", ErrProtocol)
			}
			f := FileInfo{Size: le.Uint64(rest), Mode: le.Uint32(rest[8:])}
			nl := int(le.Uint16(rest[12:]))
			rest = rest[14:]
			if nl > len(rest) {
				return nil, fmt.Errorf("%w: file name truncated", ErrProtocol)
			}
			f.Name = string(rest[:nl])
			rest = rest[nl:]
			if err := ValidName(f.Name); err != nil {
				return nil, err
			}
			files[i] = f
		}
		if len(rest) != 0 {
			return nil, fmt.Errorf("%w: %d trailing bytes", ErrProtocol, len(rest))
		}
		return MsgFileList{Files: files}, nil
	case TypeGetFile:
		nl := int(le.Uint16(b))
		if nl != len(b)-2 {
			return nil, fmt.Errorf("%w: name length %d in %d bytes", ErrProtocol, nl, len(b)-2)
		}
		name := string(b[2:])
		if err := ValidName(name); err != nil {
			return nil, err
		}
		return MsgGetFile{Name: name}, nil
	case TypeFileData:
		return MsgFileData{Offset: le.Uint64(b), Data: b[8:]}, nil
	case TypeFileEnd:
		if le.Uint32(b[12:]) != 0 {
			return nil, fmt.Errorf("%w: reserved field set", ErrProtocol)
		}
		return MsgFileEnd{Size: le.Uint64(b), CRC32C: le.Uint32(b[8:])}, nil
	case TypeDone:
		if le.Uint32(b[4:]) != 0 {
			return nil, fmt.Errorf("%w: reserved field set", ErrProtocol)
		}
		return MsgDone{Pid: le.Uint32(b), Pages: le.Uint64(b[8:]), Bytes: le.Uint64(b[16:])}, nil
	case TypeDoneAck:
		if le.Uint32(b[4:]) != 0 {
			return nil, fmt.Errorf("%w: reserved field set", ErrProtocol)
		}
		return MsgDoneAck{Pid: le.Uint32(b)}, nil
	case TypeError:
		return MsgError{Code: ErrorCode(le.Uint32(b)), Errno: le.Uint32(b[4:]), Text: string(b[8:])}, nil
	case TypeClose:
		return MsgClose{}, nil
	}
	return nil, fmt.Errorf("%w: unknown message type %d", ErrProtocol, uint8(h.Type))
}

// decodePagesMeta decodes and checks the fixed part of a Pages body and
// returns it with the number of runs that follow.
func decodePagesMeta(b []byte, pageSize int) (MsgPages, int, error) {
	if len(b) < pagesFixed {
		return MsgPages{}, 0, ErrShort
	}
	m := MsgPages{Pid: le.Uint32(b), NrPages: le.Uint32(b[4:]), Addr: le.Uint64(b[8:]), Status: le.Uint16(b[16:])}
	nruns := le.Uint32(b[20:])
	if m.NrPages == 0 || m.NrPages > uint32(MaxRequestBytes/pageSize) {
		return m, 0, fmt.Errorf("%w: %d pages", ErrProtocol, m.NrPages)
	}
	switch m.Status {
	case StatusOK, StatusNotInImage:
		if nruns != 0 {
			return m, 0, fmt.Errorf("%w: runs with status %d", ErrProtocol, m.Status)
		}
	case StatusPartial:
		if nruns == 0 || nruns > m.NrPages {
			return m, 0, fmt.Errorf("%w: %d runs for %d pages", ErrProtocol, nruns, m.NrPages)
		}
	default:
		return m, 0, fmt.Errorf("%w: unknown page status %d", ErrProtocol, m.Status)
	}
	if le.Uint16(b[18:]) != 0 {
		return m, 0, fmt.Errorf("%w: reserved field set", ErrProtocol)
	}
	return m, int(nruns), nil
}

// decodeRuns decodes the nruns runs at the start of b (the bytes right after
// the fixed part of a Pages body) into buf, and returns them with the number
// of pages that are present. nruns was bounded by decodePagesMeta.
func decodeRuns(b []byte, nruns int, m *MsgPages, buf []Run) ([]Run, int, error) {
	switch m.Status {
	case StatusOK:
		return buf[:0], int(m.NrPages), nil
	case StatusNotInImage:
		return buf[:0], 0, nil
	}
	if len(b) < nruns*runSize {
		return nil, 0, ErrShort
	}
	runs := buf[:0]
	var total uint64
	present := 0
	for i := 0; i < nruns; i++ {
		n, f := le.Uint32(b[i*runSize:]), le.Uint32(b[i*runSize+4:])
		if n == 0 || f > 1 {
			return nil, 0, fmt.Errorf("%w: bad run {%d, %#x}", ErrProtocol, n, f)
		}
		total += uint64(n)
		if f == 1 {
			present += int(n)
		}
		runs = append(runs, Run{NrPages: n, Present: f == 1})
	}
	if total != uint64(m.NrPages) {
		return nil, 0, fmt.Errorf("%w: runs cover %d of %d pages", ErrProtocol, total, m.NrPages)
	}
	return runs, present, nil
}
