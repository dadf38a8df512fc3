package logsink

import (
	"math"
	"strconv"
)

// appendJSONFloat formats f the way encoding/json does, so that a number
// re-encoded from either parser reads the same.
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	format := byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// clean up e-09 to e-9
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// appendJSONNumber re-encodes the JSON number text raw in the canonical form
// shared by both parsers: an integer that fits int64 or uint64 as is,
// anything else through float64. It reports false if raw is no number.
func appendJSONNumber(dst, raw []byte) ([]byte, bool) {
	isInt := len(raw) > 0
	for _, c := range raw {
		if c == '.' || c == 'e' || c == 'E' {
			isInt = false
			break
		}
	}
	s := b2s(raw)
	if isInt {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return strconv.AppendInt(dst, n, 10), true
		}
		if n, err := strconv.ParseUint(s, 10, 64); err == nil {
			return strconv.AppendUint(dst, n, 10), true
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && f == 0 {
		return dst, false
	}
	return appendJSONFloat(dst, f), true
}
