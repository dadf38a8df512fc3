package jsonw

import "unicode/utf8"

// AppendString appends s as a quoted JSON string (see AppendEscaped).
func AppendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	dst = AppendEscaped(dst, s)
	return append(dst, '"')
}

// AppendEscaped appends s JSON-escaped, without quotes, as encoding/json
// writes it but for HTML characters and U+2028/U+2029, which stay as they
// are (RFC 8259 needs no escape for them): '"' and '\\' escaped, control
// characters as \b \f \n \r \t or \u00XX, valid UTF-8 kept, each byte that
// is not valid UTF-8 replaced by \ufffd, so the result is valid JSON
// whatever s holds. It does not allocate beyond dst's growth.
func AppendEscaped[S ~string | ~[]byte](dst []byte, s S) []byte {
	const hex = "0123456789abcdef"
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			if n := runeLen(s, i); n > 0 {
				i += n
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		i++
		start = i
	}
	return append(dst, s[start:]...)
}

// runeLen returns the length of the valid UTF-8 encoding that starts at
// s[i], or 0 where utf8.DecodeRune would return (RuneError, 1): overlong
// forms, surrogates, values past U+10FFFF and cut sequences are invalid. It
// reads s in place, which DecodeRune could not do for both type arguments.
func runeLen[S ~string | ~[]byte](s S, i int) int {
	c := s[i]
	n, lo, hi := 0, byte(0x80), byte(0xbf) // length, range of the second byte
	switch {
	case c < 0xc2: // a continuation byte, or an overlong 2-byte form
		return 0
	case c < 0xe0:
		n = 2
	case c < 0xf0:
		n = 3
		if c == 0xe0 {
			lo = 0xa0 // overlong below
		} else if c == 0xed {
			hi = 0x9f // surrogates above
		}
	case c < 0xf5:
		n = 4
		if c == 0xf0 {
			lo = 0x90 // overlong below
		} else if c == 0xf4 {
			hi = 0x8f // past U+10FFFF above
		}
	default:
		return 0
	}
	if len(s)-i < n || s[i+1] < lo || s[i+1] > hi {
		return 0
	}
	for k := 2; k < n; k++ {
		if s[i+k]&0xc0 != 0x80 {
			return 0
		}
	}
	return n
}
