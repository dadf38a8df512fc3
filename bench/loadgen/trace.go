package loadgen

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// maxTraceLine bounds one line of a trace file; longer lines are reported
// and skipped.
const maxTraceLine = 1 << 20

// TraceRequest is one request of a trace in the Mooncake format
// (FAST'25 release): {"timestamp": ms, "input_length": tokens,
// "output_length": tokens, "hash_ids": [512-token block ids]}.
type TraceRequest struct {
	Line   int           // line number in the file, from 1
	At     time.Duration // arrival, from the start of the slice read
	Input  int           // prompt tokens
	Output int           // answer tokens; 0 in the file is read as 1
	Blocks []int64       // the prompt as a chain of block ids
}

// LineError is a trace line that was skipped, and why.
type LineError struct {
	Line int
	Err  string
}

func (e LineError) String() string { return fmt.Sprintf("line %d: %s", e.Line, e.Err) }

// ErrEmptyTrace is returned when no line of a trace gives a request.
var ErrEmptyTrace = errors.New("loadgen: the trace yields no request")

// ReadTrace reads a trace, keeping the requests whose timestamp is in
// [start, start+length) (length 0: to the end), with arrivals counted from
// start. Lines that are not JSON objects, lack a field, or carry negative
// numbers are returned in bad and skipped. Requests come back in arrival
// order (file order among equal times).
func ReadTrace(r io.Reader, start, length time.Duration) (reqs []TraceRequest, bad []LineError, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for n := 1; ; n++ {
		line = line[:0]
		tooLong := false
		var rerr error
		for {
			chunk, e := br.ReadSlice('\n')
			if len(line)+len(chunk) <= maxTraceLine {
				line = append(line, chunk...)
			} else {
				tooLong = true
			}
			if e != bufio.ErrBufferFull {
				rerr = e
				break
			}
		}
		if rerr != nil && rerr != io.EOF {
			return nil, bad, fmt.Errorf("cannot read the trace at line %d: %w", n, rerr)
		}
		switch trimmed := trimSpace(line); {
		case tooLong:
			bad = append(bad, LineError{n, fmt.Sprintf("longer than %d bytes", maxTraceLine)})
		case len(trimmed) == 0:
		default:
			tr, msg := parseTraceLine(trimmed)
			if msg != "" {
				bad = append(bad, LineError{n, msg})
				break
			}
			if tr.At < start || (length > 0 && tr.At >= start+length) {
				break
			}
			tr.Line, tr.At = n, tr.At-start
			reqs = append(reqs, tr)
		}
		if rerr == io.EOF {
			break
		}
	}
	if len(reqs) == 0 {
		return nil, bad, ErrEmptyTrace
	}
	slices.SortStableFunc(reqs, func(a, b TraceRequest) int { return int(a.At - b.At) })
	return reqs, bad, nil
}

// parseTraceLine reads one line; msg says what is wrong with it.
func parseTraceLine(b []byte) (tr TraceRequest, msg string) {
	var v struct {
		Timestamp *float64 `json:"timestamp"`
		Input     *int     `json:"input_length"`
		Output    *int     `json:"output_length"`
		HashIDs   *[]int64 `json:"hash_ids"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return tr, "not a JSON object of the trace format: " + err.Error()
	}
	switch {
	case v.Timestamp == nil:
		return tr, "no timestamp"
	case v.Input == nil:
		return tr, "no input_length"
	case v.Output == nil:
		return tr, "no output_length"
	case v.HashIDs == nil:
		return tr, "no hash_ids"
	case *v.Timestamp < 0:
		return tr, fmt.Sprintf("negative timestamp %g", *v.Timestamp)
	case *v.Input <= 0:
		return tr, fmt.Sprintf("input_length %d is not positive", *v.Input)
	case *v.Output < 0:
		return tr, fmt.Sprintf("negative output_length %d", *v.Output)
	case len(*v.HashIDs) == 0:
		return tr, "empty hash_ids"
	case *v.Input > len(*v.HashIDs)*BlockTokens:
		return tr, fmt.Sprintf("input_length %d is more than %d blocks of %d tokens", *v.Input, len(*v.HashIDs), BlockTokens)
	}
	for _, id := range *v.HashIDs {
		if id < 0 {
			return tr, fmt.Sprintf("negative block id %d", id)
		}
	}
	return TraceRequest{
		At:     time.Duration(*v.Timestamp * float64(time.Millisecond)),
		Input:  *v.Input,
		Output: max(*v.Output, 1),
		Blocks: *v.HashIDs,
	}, ""
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t' || b[0] == '\r' || b[0] == '\n') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t' || b[len(b)-1] == '\r' || b[len(b)-1] == '\n') {
		b = b[:len(b)-1]
	}
	return b
}

// Ceiling is the share of the trace's prompt blocks that are a prefix some
// earlier request of the trace already had: what one server with an
// infinite cache that saw every request would find cached, the most any
// placement can reach.
func Ceiling(reqs []TraceRequest) float64 {
	seen := make(map[[2]uint64]struct{})
	var hit, total int
	for _, r := range reqs {
		var key [2]uint64
		match := true
		for _, id := range r.Blocks {
			key = [2]uint64{mix(key[0] ^ uint64(id)), key[1] + 1}
			if _, ok := seen[key]; ok && match {
				hit++
			} else {
				match = false
				seen[key] = struct{}{}
			}
			total++
		}
	}
	if total == 0 {
		return 0
	}
	return float64(hit) / float64(total)
}
