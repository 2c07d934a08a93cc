package pagesrv

import (
	"encoding/binary"
	"fmt"
)

// Wire constants. All integers on the wire are little-endian.
const (
	// Magic starts every message header ("LZPS" read as bytes).
	Magic uint32 = 'L' | 'Z'<<8 | 'P'<<16 | 'S'<<24
	// Version is the protocol version this package speaks.
	Version uint8 = 1
	// HeaderSize is the size of the fixed message header.
	HeaderSize = 16

	// MaxRequestBytes bounds the page data of one GetPages/Pages exchange.
	MaxRequestBytes = 4 << 20
	// MaxExtentsPerMsg bounds the extents carried by one Extents message.
	MaxExtentsPerMsg = 4096
	// MaxFileChunk bounds the data of one FileData message.
	MaxFileChunk = 1 << 20
	// MaxNameLen bounds a file name (one path component, as NAME_MAX).
	MaxNameLen = 255
	// MaxErrorText bounds the text of an Error message.
	MaxErrorText = 1024
	// maxFileListBody bounds one FileList chunk.
	maxFileListBody = 64 << 10

	minPageSize = 4096
	maxPageSize = 64 << 10
)

// FlagMore in a header marks a chunk of a multi-message reply that is not the
// last one (Extents, FileList).
const FlagMore uint16 = 1

// Type is a message type.
type Type uint8

// Message types. Requests travel client -> server, replies server -> client.
const (
	TypeHello      Type = 1  // client: version, flags, page size
	TypeHelloAck   Type = 2  // server: accepted version, page size, bounds
	TypeGetPages   Type = 3  // client: pid, addr, nrPages
	TypePages      Type = 4  // server: status, runs, page bytes
	TypeGetExtents Type = 5  // client: pid
	TypeExtents    Type = 6  // server: extents chunk (FlagMore until the last)
	TypeListFiles  Type = 7  // client
	TypeFileList   Type = 8  // server: file entries chunk (FlagMore until the last)
	TypeGetFile    Type = 9  // client: name
	TypeFileData   Type = 10 // server: offset + bytes
	TypeFileEnd    Type = 11 // server: end of a file: size, CRC-32C
	TypeDone       Type = 12 // client: every page of pid (0 = all) is in place
	TypeDoneAck    Type = 13 // server
	TypeError      Type = 14 // server: a request failed, or a protocol error (id 0)
	TypeClose      Type = 15 // client: end of session
	typeLast            = TypeClose
)

var typeNames = [...]string{
	TypeHello: "Hello", TypeHelloAck: "HelloAck", TypeGetPages: "GetPages", TypePages: "Pages",
	TypeGetExtents: "GetExtents", TypeExtents: "Extents", TypeListFiles: "ListFiles",
	TypeFileList: "FileList", TypeGetFile: "GetFile", TypeFileData: "FileData", TypeFileEnd: "FileEnd",
	TypeDone: "Done", TypeDoneAck: "DoneAck", TypeError: "Error", TypeClose: "Close",
}

func (t Type) String() string {
	if t >= 1 && t <= typeLast {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// fromClient reports whether t is a request (sent by clients).
func (t Type) fromClient() bool {
	switch t {
	case TypeHello, TypeGetPages, TypeGetExtents, TypeListFiles, TypeGetFile, TypeDone, TypeClose:
		return true
	}
	return false
}

// Header is the fixed part of every message.
//
//	0  magic   u32
//	4  version u8
//	5  type    u8
//	6  flags   u16
//	8  length  u32  body bytes after the header
//	12 id      u32  request id, echoed by replies (0: not tied to a request)
type Header struct {
	Version uint8
	Type    Type
	Flags   uint16
	Length  uint32
	ID      uint32
}

func putHeader(b []byte, h Header) {
	binary.LittleEndian.PutUint32(b[0:], Magic)
	b[4] = h.Version
	b[5] = byte(h.Type)
	binary.LittleEndian.PutUint16(b[6:], h.Flags)
	binary.LittleEndian.PutUint32(b[8:], h.Length)
	binary.LittleEndian.PutUint32(b[12:], h.ID)
}

// ParseHeader decodes and validates a header: magic, version, known type,
// known flags and a body length within the bound of the type for the given
// page size. It never allocates.
func ParseHeader(b []byte, pageSize int) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShort
	}
	if m := binary.LittleEndian.Uint32(b); m != Magic {
		return Header{}, fmt.Errorf("%w: %#08x", ErrBadMagic, m)
	}
	h := Header{
		Version: b[4],
		Type:    Type(b[5]),
		Flags:   binary.LittleEndian.Uint16(b[6:]),
		Length:  binary.LittleEndian.Uint32(b[8:]),
		ID:      binary.LittleEndian.Uint32(b[12:]),
	}
	if h.Version != Version {
		return h, fmt.Errorf("%w: %d (this side speaks %d)", ErrVersion, h.Version, Version)
	}
	if h.Type < 1 || h.Type > typeLast {
		return h, fmt.Errorf("%w: unknown message type %d", ErrProtocol, uint8(h.Type))
	}
	if h.Flags&^FlagMore != 0 || (h.Flags&FlagMore != 0 && h.Type != TypeExtents && h.Type != TypeFileList) {
		return h, fmt.Errorf("%w: bad flags %#x on %v", ErrProtocol, h.Flags, h.Type)
	}
	lo, hi := bodyBounds(h.Type, pageSize)
	if h.Length < lo || h.Length > hi {
		return h, fmt.Errorf("%w: %v body of %d bytes, allowed %d..%d", ErrTooLarge, h.Type, h.Length, lo, hi)
	}
	return h, nil
}

// bodyBounds returns the smallest and largest legal body of a message type.
func bodyBounds(t Type, pageSize int) (lo, hi uint32) {
	switch t {
	case TypeHello, TypeHelloAck, TypeGetPages, TypeFileEnd:
		return 16, 16
	case TypePages:
		maxPages := uint32(MaxRequestBytes / pageSize)
		return pagesFixed, pagesFixed + runSize*maxPages + MaxRequestBytes
	case TypeGetExtents, TypeDoneAck:
		return 8, 8
	case TypeExtents:
		return 8, 8 + extentSize*MaxExtentsPerMsg
	case TypeListFiles, TypeClose:
		return 0, 0
	case TypeFileList:
		return 4, maxFileListBody
	case TypeGetFile:
		return 3, 2 + MaxNameLen
	case TypeFileData:
		return 8, 8 + MaxFileChunk
	case TypeDone:
		return 24, 24
	case TypeError:
		return 8, 8 + MaxErrorText
	}
	return 1, 0 // unknown: nothing fits
}

// validPageSize reports whether ps is a page size this protocol handles.
func validPageSize(ps int) bool {
	return ps >= minPageSize && ps <= maxPageSize && ps&(ps-1) == 0
}
