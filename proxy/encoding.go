package proxy

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"

	"github.com/valyala/fasthttp"
)

// gptapi asks upstreams for identity answers (Accept-Encoding), since it
// reads, rewrites and records them as text; an upstream that compresses
// anyway is decoded here, for the caller and the record alike, within
// max_response_bytes of decoded bytes. Only this rare path allocates.

var errBadEncoding = errors.New("proxy: answer in an unsupported Content-Encoding")

// compressed reports whether a Content-Encoding value needs decoding.
func compressed(ce []byte) bool {
	return len(ce) > 0 && !bytes.EqualFold(ce, []byte("identity"))
}

// decoder returns a reader of r decoded per the Content-Encoding ce.
func decoder(ce []byte, r io.Reader) (io.Reader, error) {
	switch {
	case bytes.EqualFold(ce, []byte("gzip")), bytes.EqualFold(ce, []byte("x-gzip")):
		return gzip.NewReader(r)
	case bytes.EqualFold(ce, []byte("deflate")):
		return zlib.NewReader(r) // RFC 9110's deflate is zlib-wrapped
	}
	return nil, errBadEncoding
}

// decodeAnswer replaces a compressed non-stream answer's body by its
// decoded bytes, at most max of them (errAnswerTooLarge beyond).
func decodeAnswer(resp *fasthttp.Response, max int) error {
	ce := resp.Header.ContentEncoding()
	if !compressed(ce) {
		return nil
	}
	r, err := decoder(ce, bytes.NewReader(resp.Body()))
	if err != nil {
		return err
	}
	out, err := appendLimited(nil, r, max)
	if err != nil {
		return err
	}
	resp.SetBody(out)
	resp.Header.Del(fasthttp.HeaderContentEncoding)
	return nil
}
