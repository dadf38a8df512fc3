package main

import (
	"strconv"
	"unicode/utf8"
)

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a quoted JSON string. Valid UTF-8 passes
// through as is; control characters, quotes and backslashes are escaped, and
// invalid bytes become U+FFFD so that every answer stays valid JSON whatever
// the request carried.
func appendJSONString[T ~string | ~[]byte](dst []byte, s T) []byte {
	dst = append(dst, '"')
	dst = appendJSONText(dst, s)
	return append(dst, '"')
}

// appendJSONText appends s escaped for use inside a JSON string, without quotes.
func appendJSONText[T ~string | ~[]byte](dst []byte, s T) []byte {
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			var rb [utf8.UTFMax]byte
			nb := copy(rb[:], s[i:min(i+utf8.UTFMax, len(s))])
			r, size := utf8.DecodeRune(rb[:nb])
			if r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
			dst = append(dst, s[start:i]...)
			dst = append(dst, "\ufffd"...)
			i++
			start = i
			continue
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	return append(dst, s[start:]...)
}

func appendInt(dst []byte, n int) []byte {
	return strconv.AppendInt(dst, int64(n), 10)
}

// appendUsage appends an OpenAI usage object.
func appendUsage(dst []byte, prompt, completion int) []byte {
	dst = append(dst, `{"prompt_tokens":`...)
	dst = appendInt(dst, prompt)
	dst = append(dst, `,"completion_tokens":`...)
	dst = appendInt(dst, completion)
	dst = append(dst, `,"total_tokens":`...)
	dst = appendInt(dst, prompt+completion)
	return append(dst, '}')
}

// appendError appends the OpenAI error body: the one place it is built.
func appendError(dst []byte, msg, typ, code string) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = appendJSONString(dst, msg)
	dst = append(dst, `,"type":`...)
	dst = appendJSONString(dst, typ)
	dst = append(dst, `,"code":`...)
	if code == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendJSONString(dst, code)
	}
	return append(dst, `,"param":null}}`...)
}

// errorKind gives the OpenAI error type and code that real servers send with
// status, so an injected failure looks like the real thing.
func errorKind(status int) (typ, code string) {
	switch {
	case status == 400:
		return "invalid_request_error", ""
	case status == 401:
		return "authentication_error", "invalid_api_key"
	case status == 403:
		return "permission_error", ""
	case status == 404:
		return "invalid_request_error", "not_found"
	case status == 405:
		return "invalid_request_error", "method_not_allowed"
	case status == 408:
		return "timeout_error", "timeout"
	case status == 413:
		return "invalid_request_error", "request_too_large"
	case status == 429:
		return "rate_limit_error", "rate_limit_exceeded"
	case status >= 500:
		return "server_error", ""
	default:
		return "invalid_request_error", ""
	}
}
