package images

import "errors"

// Errors callers branch on (wrapped with context, match with errors.Is).
var (
	// ErrNotFound: the image file (or directory) does not exist. Errors
	// carrying it also wrap fs.ErrNotExist.
	ErrNotFound = errors.New("image not found")
	// ErrCorrupt: bad magic, truncated entry, undecodable protobuf or an
	// inconsistent pagemap.
	ErrCorrupt = errors.New("corrupt image")
	// ErrNotInImage: Pages.ReadAt was asked for a page the image does not
	// hold (outside the dumped extents, or in an extent without data).
	ErrNotInImage = errors.New("pages not in image")
)
