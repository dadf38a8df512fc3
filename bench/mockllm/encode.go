package main

import (
	"github.com/gptapi/gptapi/internal/jsonw"

	"strconv"
)

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
	dst = jsonw.AppendString(dst, msg)
	dst = append(dst, `,"type":`...)
	dst = jsonw.AppendString(dst, typ)
	dst = append(dst, `,"code":`...)
	if code == "" {
		dst = append(dst, "null"...)
	} else {
		dst = jsonw.AppendString(dst, code)
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
