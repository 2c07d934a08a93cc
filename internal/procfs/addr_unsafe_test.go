package procfs

import "unsafe"

// uintptrOf is the address of a variable (tests only: to find the mapping
// that holds it).
func uintptrOf(p *int) uintptr { return uintptr(unsafe.Pointer(p)) }
