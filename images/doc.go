// Package images reads and writes a checkpoint image directory in CRIU's own
// on-disk format, so that CRIU's tools (crit, checkpointctl) can read what
// lazyr writes and lazyr can read what CRIU writes.
//
// An image file is a little-endian u32 magic header followed by entries, each
// a little-endian u32 length and that many bytes of protobuf (proto2, the
// generated types of go-criu's crit/images packages). The header is two
// words: IMG_COMMON (or IMG_SERVICE for the stats and irmap-cache images)
// and then the image's own magic; inventory.img alone carries only its own
// magic. Which magic and which entry type belong to an image is decided by
// its file name, through the table in kinds.go (CRIU's criu/image-desc.c).
//
// A few images carry raw bytes after some entries, sized by fields of the
// entry: pipes-data/fifo-data (the pipe contents), sk-queues, tcp-stream
// (in and out queues), bpfmap-data. WriteRecords/ReadRecords handle them.
// pages-ID.img has no header at all: it is the concatenation of the pages
// that pagemap-PID.img lists with PE_PRESENT, in pagemap order. ghost-file
// images hold a deleted file's contents as chunks (see ghost.go).
//
// Every image is written to a temporary file in the directory, fsynced and
// renamed into place, so a crash never leaves a half-written image under its
// real name; Dir.Sync makes the renames themselves durable. With
// Options.DeferSync the per-image fsync is skipped and Sync does one
// syncfs(2) instead, which takes the fsync cost out of a dump's downtime.
//
// Readers treat the bytes as untrusted: every length is checked against the
// bytes left in the file before anything is allocated, and any inconsistency
// is reported as ErrCorrupt with the offending offset.
package images
