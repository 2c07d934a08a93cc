package lazypages

import (
	"errors"

	"github.com/lazyr/lazyr/images"
)

// Errors callers branch on; match with errors.Is.
var (
	// ErrNoDaemon: nothing listens on the work dir's socket. Restore must
	// fail before creating any process.
	ErrNoDaemon = errors.New("no lazy-pages daemon listening")
	// ErrVersion: the two sides speak different protocol versions.
	ErrVersion = errors.New("lazy-pages protocol version mismatch")
	// ErrRefused: the daemon answered a request with an error; the
	// daemon's text follows in the error message.
	ErrRefused = errors.New("lazy-pages daemon refused")
	// ErrNotInImage: a PageSource was asked for pages it does not hold.
	// The daemon maps such pages to the zero page. It is
	// images.ErrNotInImage itself, so sources built on package images
	// and others report it alike.
	ErrNotInImage = images.ErrNotInImage
	// ErrGuard: the guard process failed or went away; the daemon can no
	// longer promise that processes die with it, so it kills them.
	ErrGuard = errors.New("lazy-pages guard failed")
	// ErrAborted: a registering client went away without Done; the
	// restore failed, so the processes it registered are killed.
	ErrAborted = errors.New("restore aborted before Done")

	errPeerClosed = errors.New("peer closed the connection")
)
