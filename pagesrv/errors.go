package pagesrv

import (
	"errors"
	"fmt"
	"net"

	"github.com/lazyr/lazyr/images"
	"golang.org/x/sys/unix"
)

// Sentinel errors callers branch on with errors.Is.
var (
	// ErrNotInImage: the pages asked for are not in the image (never dumped,
	// so they read as zero). Sources return it, and the client returns a
	// *NotInImageError that matches it. It is images.ErrNotInImage itself,
	// so code that knows the images package's sentinel (the lazy-pages
	// daemon) recognizes the client's errors as well.
	ErrNotInImage = images.ErrNotInImage
	// ErrShort: a buffer does not hold a whole message yet.
	ErrShort = errors.New("pagesrv: short message")
	// ErrBadMagic: the bytes are not a lazyr page-server message.
	ErrBadMagic = errors.New("pagesrv: bad magic")
	// ErrVersion: the peer speaks another protocol version.
	ErrVersion = errors.New("pagesrv: unsupported protocol version")
	// ErrTooLarge: a message length is out of the bounds of its type.
	ErrTooLarge = errors.New("pagesrv: message length out of bounds")
	// ErrProtocol: a message is malformed or unexpected.
	ErrProtocol = errors.New("pagesrv: protocol error")
	// ErrTruncated: the peer closed the connection in the middle of a message.
	ErrTruncated = errors.New("pagesrv: connection closed mid-message")
	// ErrTimeout: the peer did not make progress within the timeout.
	ErrTimeout = errors.New("pagesrv: peer timed out")
	// ErrClosed: the client or server was closed.
	ErrClosed = errors.New("pagesrv: closed")
	// ErrBadRequest: a request's arguments are invalid (alignment, size).
	ErrBadRequest = errors.New("pagesrv: bad request")
	// ErrBadName: a file name is not a single plain path component.
	ErrBadName = errors.New("pagesrv: bad file name")
)

// ErrorCode classifies an Error message.
type ErrorCode uint32

// Error codes carried by Error messages.
const (
	CodeProtocol   ErrorCode = 1 // malformed or unexpected message; the server disconnects
	CodeVersion    ErrorCode = 2 // unsupported version; the server disconnects
	CodePageSize   ErrorCode = 3 // page sizes differ; the server disconnects
	CodeBadRequest ErrorCode = 4 // invalid arguments
	CodeSource     ErrorCode = 5 // the page source failed (Errno may say why)
	CodeNotFound   ErrorCode = 6 // no such file / process
	CodeIO         ErrorCode = 7 // reading a served file failed
	CodeTimeout    ErrorCode = 8 // the client stalled; the server disconnects
	CodeShutdown   ErrorCode = 9 // the server is shutting down
)

var codeNames = map[ErrorCode]string{
	CodeProtocol: "protocol error", CodeVersion: "unsupported version", CodePageSize: "page size mismatch",
	CodeBadRequest: "bad request", CodeSource: "page source error", CodeNotFound: "not found",
	CodeIO: "I/O error", CodeTimeout: "timeout", CodeShutdown: "server shutting down",
}

func (c ErrorCode) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return fmt.Sprintf("code %d", uint32(c))
}

// RemoteError is an Error message received from the server.
type RemoteError struct {
	Code  ErrorCode
	Errno unix.Errno
	Text  string
}

func (e *RemoteError) Error() string {
	s := "pagesrv: server: " + e.Code.String()
	if e.Text != "" {
		s += ": " + e.Text
	}
	return s
}

// Unwrap lets errors.Is match the errno and the matching sentinel.
func (e *RemoteError) Unwrap() []error {
	var errs []error
	if e.Errno != 0 {
		errs = append(errs, e.Errno)
	}
	switch e.Code {
	case CodeProtocol:
		errs = append(errs, ErrProtocol)
	case CodeVersion:
		errs = append(errs, ErrVersion)
	case CodeBadRequest:
		errs = append(errs, ErrBadRequest)
	case CodeTimeout:
		errs = append(errs, ErrTimeout)
	case CodeShutdown:
		errs = append(errs, ErrClosed)
	}
	return errs
}

// NotInImageError reports the pages of a read that are not in the image.
// Those pages were zero-filled in the destination; the rest was read.
type NotInImageError struct {
	Pid    int
	Absent []Extent
}

func (e *NotInImageError) Error() string {
	var n uint64
	for _, a := range e.Absent {
		n += a.NrPages
	}
	return fmt.Sprintf("pagesrv: pid %d: %d pages in %d runs not in image", e.Pid, n, len(e.Absent))
}

// Is makes errors.Is(err, ErrNotInImage) true.
func (e *NotInImageError) Is(target error) bool { return target == ErrNotInImage }

// ConnError is a failure of one server connection, reported through
// ServerOptions.OnError. The connection was dropped; others go on.
type ConnError struct {
	Remote net.Addr
	Err    error
}

func (e *ConnError) Error() string { return fmt.Sprintf("pagesrv: client %v: %v", e.Remote, e.Err) }
func (e *ConnError) Unwrap() error { return e.Err }

// errnoOf returns the errno inside err, or 0.
func errnoOf(err error) uint32 {
	var en unix.Errno
	if errors.As(err, &en) {
		return uint32(en)
	}
	return 0
}

// ErrConnLost: the connection to the server broke (EOF, reset, timeout);
// the error also wraps the cause.
var ErrConnLost = errors.New("pagesrv: connection lost")
