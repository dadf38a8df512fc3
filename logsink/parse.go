package logsink

import "bytes"

// parser reads the JSON of a record's bodies for the columns derived from
// them. There are two: simdjson-go where the CPU has AVX2 and CLMUL, and
// fastjson everywhere else; both must derive the same columns and assemble
// the same bytes. A parser is used by one goroutine and reuses its memory
// from record to record.
type parser interface {
	// request sets d.hasTools and d.multimodal from a request body.
	request(body []byte, d *derived)
	// answer sets d.usage and adds the called tools to d from a
	// non-streaming answer.
	answer(body []byte, d *derived)
	// stream feeds each line of ndjson, one chunk object a line, to a.
	// A line that is not a JSON object is skipped.
	stream(ndjson []byte, a *assembly)
}

// parsers holds the constructor of every parser compiled in, by name, for
// tests and benchmarks that compare them.
// Both parsers walk every key of an object in order and act on each
// occurrence, so that duplicate keys give the same result too.
var parsers = map[string]func() parser{
	"fastjson": func() parser { return &fastParser{} },
}

// defaultParser is replaced by "simdjson+fastjson" at init where the CPU
// runs simdjson-go.
var defaultParser = "fastjson"

// ParserName is the JSON parser the writer uses on this machine:
// "simdjson+fastjson" (simdjson-go for streams) or "fastjson".
func ParserName() string {
	return defaultParser
}

func newParser() parser {
	return parsers[defaultParser]()
}

// trimDone drops a trailing [DONE] line, which is a data payload the caller
// got but not JSON; it would make simdjson-go reject the whole NDJSON.
func trimDone(ndjson []byte) []byte {
	ndjson = bytes.TrimRight(ndjson, " \t\r\n")
	if bytes.HasSuffix(ndjson, []byte("[DONE]")) {
		rest := ndjson[:len(ndjson)-len("[DONE]")]
		if len(rest) == 0 || rest[len(rest)-1] == '\n' {
			return bytes.TrimRight(rest, " \t\r\n")
		}
	}
	return ndjson
}
