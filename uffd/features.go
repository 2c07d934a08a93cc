package uffd

import (
	"math/bits"
	"strconv"
	"strings"
)

// FeatureNames renders a feature mask as "EVENT_FORK|EVENT_REMAP", naming
// bits this package does not know as "bit N".
func FeatureNames(mask uint64) string {
	if mask == 0 {
		return "none"
	}
	var parts []string
	for mask != 0 {
		b := bits.TrailingZeros64(mask)
		mask &^= 1 << b
		if b < len(featureNames) {
			parts = append(parts, featureNames[b])
		} else {
			parts = append(parts, "bit "+strconv.Itoa(b))
		}
	}
	return strings.Join(parts, "|")
}
