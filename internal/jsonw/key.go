package jsonw

import (
	"bytes"
	"unicode/utf8"
)

// Key returns the member name whose raw bytes (between the quotes) are raw,
// as a JSON parser reads it: `"max\u005ftokens"` is max_tokens to every
// upstream, so it must be to gptapi too. Names almost never hold escapes,
// so raw itself is returned; an escaped name is decoded into buf, and one
// that decodes longer than buf is returned undecoded (every name gptapi
// looks for is shorter, so it could not be one of them).
func Key(buf *[32]byte, raw []byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	dec, ok := unquoteKey(buf[:0], raw)
	if !ok {
		return raw
	}
	return dec
}

// unquoteKey decodes the JSON string escapes in raw, appending to dst. It
// gives up (false) on an escape that is not JSON, or when the result would
// not fit dst's capacity (see Key).
func unquoteKey(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			if len(dst) == cap(dst) {
				return dst, false
			}
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return dst, false
		}
		var r rune
		switch raw[i+1] {
		case '"', '\\', '/':
			r = rune(raw[i+1])
		case 'b':
			r = '\b'
		case 'f':
			r = '\f'
		case 'n':
			r = '\n'
		case 'r':
			r = '\r'
		case 't':
			r = '\t'
		case 'u':
			var ok bool
			if r, ok = Hex4(raw[i+2:]); !ok {
				return dst, false
			}
			i += 4
			if r >= 0xd800 && r < 0xdc00 {
				// A high surrogate needs its low half; a lone one
				// decodes to U+FFFD.
				if i+7 < len(raw) && raw[i+2] == '\\' && raw[i+3] == 'u' {
					if lo, ok := Hex4(raw[i+4:]); ok && lo >= 0xdc00 && lo < 0xe000 {
						r = (r-0xd800)<<10 | (lo - 0xdc00) + 0x10000
						i += 6
					} else {
						r = utf8.RuneError
					}
				} else {
					r = utf8.RuneError
				}
			} else if r >= 0xdc00 && r < 0xe000 {
				r = utf8.RuneError
			}
		default:
			return dst, false
		}
		i += 2
		if cap(dst)-len(dst) < utf8.RuneLen(r) {
			return dst, false
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst, true
}

// Hex4 reads the four hex digits of a \u escape.
func Hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
