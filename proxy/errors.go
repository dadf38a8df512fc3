package proxy

import (
	"github.com/valyala/fasthttp"

	"github.com/gptapi/gptapi/internal/jsonw"
)

// apiError is an error gptapi itself answers with. Its Message is the text
// the caller, the access log and the record's error column all get.
type apiError struct {
	Status  int
	Type    string
	Code    string
	Message string
	// Tried is the path of an all-failed request, shown in the body as
	// "tried"; nil for every other error. It is the exchange's own list:
	// the error is written before the handler returns.
	Tried *triedPath
}

func (e *apiError) Error() string { return e.Message }

const (
	typeInvalidRequest = "invalid_request_error"
	typeAuthentication = "authentication_error"
	typeUpstream       = "upstream_error"
)

func badRequest(msg string) *apiError {
	return &apiError{Status: fasthttp.StatusBadRequest, Type: typeInvalidRequest, Code: "invalid_request", Message: msg}
}

var (
	errUnauthorized = &apiError{Status: fasthttp.StatusUnauthorized, Type: typeAuthentication, Code: "invalid_api_key",
		Message: "Invalid or missing API key. Send it as \"Authorization: Bearer <key>\"."}
	errNotFound = &apiError{Status: fasthttp.StatusNotFound, Type: typeInvalidRequest, Code: "not_found",
		Message: "Unknown path."}
	errMethodNotAllowed = &apiError{Status: fasthttp.StatusMethodNotAllowed, Type: typeInvalidRequest, Code: "method_not_allowed",
		Message: "Method not allowed on this path."}
	errTooLarge = &apiError{Status: fasthttp.StatusRequestEntityTooLarge, Type: typeInvalidRequest, Code: "request_too_large",
		Message: "Request body is larger than server.max_body_bytes."}
	errUnsupportedEncoding = &apiError{Status: fasthttp.StatusUnsupportedMediaType, Type: typeInvalidRequest, Code: "unsupported_content_encoding",
		Message: "Request body's Content-Encoding is not supported; send it uncompressed, gzip or deflate."}
	errHeadersTooLarge = &apiError{Status: fasthttp.StatusRequestHeaderFieldsTooLarge, Type: typeInvalidRequest, Code: "request_header_fields_too_large",
		Message: "Request headers are too large."}
	errAmbiguousLength = &apiError{Status: fasthttp.StatusBadRequest, Type: typeInvalidRequest, Code: "invalid_request",
		Message: "Request has both Content-Length and Transfer-Encoding."}
	errBadHTTP = &apiError{Status: fasthttp.StatusBadRequest, Type: typeInvalidRequest, Code: "invalid_request",
		Message: "Malformed HTTP request."}
	errReadTimeout = &apiError{Status: fasthttp.StatusRequestTimeout, Type: typeInvalidRequest, Code: "request_timeout",
		Message: "The request was not received whole within server.read_timeout."}
)

func modelNotFound(model []byte) *apiError {
	return &apiError{Status: fasthttp.StatusNotFound, Type: typeInvalidRequest, Code: "model_not_found",
		Message: "The model '" + string(model) + "' does not exist or no upstream serves it."}
}

// allFailed builds the error for a request every candidate and fallback
// failed. tried is the path taken; the message ends with it so a log line
// alone tells the story.
func allFailed(model []byte, last error, timeout bool, tried *triedPath) *apiError {
	status := fasthttp.StatusBadGateway
	if timeout {
		status = fasthttp.StatusGatewayTimeout
	}
	msg := "All upstreams failed for model '" + string(model) + "'"
	if last != nil {
		msg += " (last error: " + last.Error() + ")"
	}
	msg += ". Tried: " + string(tried.appendText(nil))
	return &apiError{Status: status, Type: typeUpstream, Code: "all_upstreams_failed", Message: msg, Tried: tried}
}

// appendErrorJSON appends the OpenAI-shaped body of e.
func appendErrorJSON(dst []byte, e *apiError) []byte {
	dst = append(dst, `{"error":{"message":`...)
	dst = jsonw.AppendString(dst, e.Message)
	dst = append(dst, `,"type":`...)
	dst = jsonw.AppendString(dst, e.Type)
	dst = append(dst, `,"code":`...)
	dst = jsonw.AppendString(dst, e.Code)
	dst = append(dst, `,"param":null`...)
	if e.Tried != nil {
		dst = append(dst, `,"tried":`...)
		dst = e.Tried.appendJSON(dst)
	}
	return append(dst, "}}"...)
}

// writeError answers ctx with e. Handlers return after it.
func writeError(ctx *fasthttp.RequestCtx, e *apiError) {
	ctx.Response.ResetBody()
	ctx.SetStatusCode(e.Status)
	ctx.SetContentType("application/json")
	ctx.Response.SetBodyRaw(appendErrorJSON(ctx.Response.Body()[:0], e))
}

// appendSSEError appends the event a stream ends with when its upstream
// fails after the first byte.
func appendSSEError(dst []byte, e *apiError) []byte {
	dst = append(dst, "data: "...)
	dst = appendErrorJSON(dst, e)
	return append(dst, "\n\n"...)
}
