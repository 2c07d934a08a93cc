// Package pagesrv is lazyr's page server: the protocol, a server and a client
// that move process memory between hosts for post-copy (lazy) migration.
//
// # Protocol
//
// Every message is a 16-byte little-endian header (magic "LZPS", version,
// type, flags, body length, request id) followed by a typed binary body.
// There are no string markers: the message type says what a body is, the
// id ties a reply to its request, and multi-message replies end explicitly
// (Extents and FileList chunks carry FlagMore on all but the last one, a
// file's FileData chunks are always followed by a FileEnd with its size and
// CRC-32C). Every type has a body bound, checked on the header before a
// single body byte is buffered, so a peer cannot make us allocate more than
// it sends, and never more than the bound.
//
// A session is Hello/HelloAck (version, page size, request bound), then any
// number of pipelined requests: GetPages{pid, addr, nrPages} is answered by
// Pages{..., status} plus the raw bytes of the pages that exist; pages not in
// the images are described by runs and not sent at all, so neither side ever
// reads bytes only to skip them. GetExtents lists what exists (for
// prefetch), ListFiles/GetFile fetch the non-memory image files, Done tells
// the source that every page is in place (dump --lazy-pages may then kill
// the source process), Error{code, errno, text} answers a failed request,
// Close ends the session.
//
// # Server: one epoll loop
//
// The server runs one goroutine around epoll (golang.org/x/sys/unix) over
// non-blocking sockets, edge-triggered: accept, read requests, call the
// Source, queue replies and flush them with writev, per connection as a
// small state machine with bounded input and output buffers. A MappedSource
// (the image source maps its pages files) has its bytes queued where they
// are: the page cache is copied once, into the socket. A client that
// pipelines more than it reads is throttled by not reading its requests
// until its replies drain; a budget per turn keeps one busy client from
// starving the others. This is the design the project asks for (no thread
// per connection, as CRIU's lessons say), and it gives the Source a single
// caller, so sources need no locking of their own.
//
// The one exception is the TLS handshake: it is CPU-heavy public-key work
// and, done inside the loop, one slow or hostile handshake would stall every
// transfer. So each handshake runs on a short-lived goroutine (bounded in
// number, with a deadline) that reads and writes the socket directly; once
// it succeeds the connection joins the loop and crypto/tls is fed from the
// loop's buffers (a would-block read is reported to crypto/tls as a
// temporary error, which it is designed to survive after the handshake).
//
// # Client
//
// The client is one connection: callers send requests under a mutex and one
// reader goroutine demultiplexes replies by id, reading page bytes straight
// into the caller's buffer. Go (net/rpc style) keeps many requests in
// flight; ReadPages splits and pipelines large reads. While requests are
// pending, silence longer than the timeout fails them with ErrTimeout, so a
// dead server is an error, never a hang. GoFunc completes a read with a
// callback on the reader goroutine instead (no hand-off per read); Lost is
// closed when the connection is gone, so a lazy-pages daemon can give up at
// once instead of at its next read.
//
// # Migration
//
// The source of a post-copy migration (dump --lazy-pages) serves the frozen
// process's memory with ExitWhenDone, and watches OnClose: a client that
// asked for pages and left without Done means the destination gave up, and
// the source is released. Clients that never asked for pages (idle, or
// only fetching files) do not hold an ExitWhenDone server. On the
// destination, FetchImages makes a local image directory from the served
// files in which the lazy runs stay on the server (pagemap entries without
// data): a lazy restore reads it, its daemon fetches the rest.
package pagesrv
