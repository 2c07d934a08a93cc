package images

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
)

// DumpID identifies the dump an image directory holds: the SHA-256 of its inventory.img, which records,
// among the rest, the moment of the dump (microseconds since boot). A copy of the directory, or the images
// a migration destination fetched from the source, have the same ID; another dump, even of the same
// process with the same layout, has another. Processes must never be restored from one dump while the
// lazy-pages daemon serves the memory of another: the IDs tell them apart.
func DumpID(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, InventoryName))
	if err != nil {
		return nil, fmt.Errorf("dump id of %s: %w", dir, err)
	}
	sum := sha256.Sum256(b)
	return sum[:], nil
}
