package logsink

import (
	"bytes"
	"errors"
	"strconv"
)

// Member is one member of a JSON object: views of the scanned bytes, valid
// while they are.
type Member struct {
	Key    []byte // between the quotes, escapes as sent
	Val    []byte // the whole value as sent
	Values int    // JSON values in Val, nested ones included
}

// maxJSONDepth is the deepest nesting a body may have, as fastjson allows.
const maxJSONDepth = 300

var (
	errJSONEnd   = errors.New("unexpected end of input")
	errJSONDepth = errors.New("nested deeper than 300 levels")
	errJSONTail  = errors.New("unexpected data after the top-level value")
)

// jsonSyntaxError is a byte the scanner did not expect.
type jsonSyntaxError struct {
	at   int
	what string
}

func (e *jsonSyntaxError) Error() string {
	return "unexpected " + e.what + " at byte " + strconv.Itoa(e.at)
}

// A JSON member gptapi builds values for (a request's messages and stop, an
// answer's usage and choices) may hold valueFloor values plus one per
// valueBytes bytes, and never more than maxValues: a fastjson value costs
// ~100 bytes, so a body can make gptapi hold at most ~12 bytes of values
// per byte of its own (twice that while the parser's arrays grow). Real
// chats hold one value per 10 to 1000 bytes (a message of empty content is
// 28 bytes, 3 values); an array of numbers one per 2 to 20.
const (
	valueFloor = 4096
	valueBytes = 8
	maxValues  = 1 << 20
)

// ValueBudget is how many JSON values a member of n bytes may make gptapi
// build.
func ValueBudget(n int) int {
	return min(valueFloor+n/valueBytes, maxValues)
}

// ScanObject checks that b is one JSON object and appends its members to
// dst, at most maxMembers of them. It never recurses and allocates nothing but dst's growth, whatever
// the input's depth or width, so a hostile body costs one linear pass
// before gptapi decides how much of it to build values for: fastjson's own
// Validate recurses without a depth bound, and its parser allocates a value
// for every number of an array gptapi never looks at.
//
// Like fastjson it checks structure, literals and numbers, and leaves
// string escapes to whoever unescapes the string.
func ScanObject(dst []Member, b []byte, maxMembers int) ([]Member, error) {
	i := skipWS(b, 0)
	if i >= len(b) {
		return dst, errJSONEnd
	}
	if b[i] != '{' {
		if _, err := CountValues(b); err != nil {
			return dst, err
		}
		return dst, ErrNotObject
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			key, start, err := scanKey(b, i)
			if err != nil {
				return dst, err
			}
			end, n, err := skipValue(b, start)
			if err != nil {
				return dst, err
			}
			if len(dst) == maxMembers {
				return dst, ErrTooManyMembers
			}
			dst = append(dst, Member{Key: key, Val: b[start:end], Values: n})
			if i = skipWS(b, end); i >= len(b) {
				return dst, errJSONEnd
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return dst, &jsonSyntaxError{i, "character (want ',' or '}')"}
			}
			i = skipWS(b, i+1)
		}
	}
	if skipWS(b, i) != len(b) {
		return dst, errJSONTail
	}
	return dst, nil
}

var (
	// ErrNotObject is ScanObject's error for JSON that is not an object.
	ErrNotObject = errors.New("logsink: not a JSON object")
	// ErrTooManyMembers is ScanObject's error past maxMembers members.
	ErrTooManyMembers = errors.New("logsink: too many members")
)

// CountValues checks that b is one JSON value and returns how many values
// it holds, nested ones included.
func CountValues(b []byte) (int, error) {
	i := skipWS(b, 0)
	end, n, err := skipValue(b, i)
	if err != nil {
		return 0, err
	}
	if skipWS(b, end) != len(b) {
		return 0, errJSONTail
	}
	return n, nil
}

// skipValue returns the end of the value starting at b[i] and how many
// values it holds. Containers are tracked in a bit stack, one bit a level
// (1 = object), so depth costs no memory.
func skipValue(b []byte, i int) (end, n int, err error) {
	var stack [(maxJSONDepth + 63) / 64]uint64
	depth := 0
	for {
		// A value starts at b[i].
		if i >= len(b) {
			return i, n, errJSONEnd
		}
		n++
		switch c := b[i]; c {
		case '{', '[':
			if depth == maxJSONDepth {
				return i, n, errJSONDepth
			}
			obj := c == '{'
			if obj {
				stack[depth/64] |= 1 << (depth % 64)
			} else {
				stack[depth/64] &^= 1 << (depth % 64)
			}
			depth++
			i = skipWS(b, i+1)
			if i < len(b) && (obj && b[i] == '}' || !obj && b[i] == ']') {
				i++
				depth--
				break
			}
			if obj {
				if _, i, err = scanKey(b, i); err != nil {
					return i, n, err
				}
			}
			continue
		case '"':
			if i, err = skipString(b, i); err != nil {
				return i, n, err
			}
		case 't':
			if i, err = skipLiteral(b, i, "true"); err != nil {
				return i, n, err
			}
		case 'f':
			if i, err = skipLiteral(b, i, "false"); err != nil {
				return i, n, err
			}
		case 'n':
			if i, err = skipLiteral(b, i, "null"); err != nil {
				return i, n, err
			}
		default:
			if i, err = skipNumber(b, i); err != nil {
				return i, n, err
			}
		}
		// A value ended at b[i]: close containers until one goes on.
		for {
			if depth == 0 {
				return i, n, nil
			}
			obj := stack[(depth-1)/64]&(1<<((depth-1)%64)) != 0
			if i = skipWS(b, i); i >= len(b) {
				return i, n, errJSONEnd
			}
			switch {
			case b[i] == ',':
				i = skipWS(b, i+1)
				if obj {
					if _, i, err = scanKey(b, i); err != nil {
						return i, n, err
					}
				}
			case obj && b[i] == '}', !obj && b[i] == ']':
				i++
				depth--
				continue
			default:
				return i, n, &jsonSyntaxError{i, "character (want ',' or the container's end)"}
			}
			break
		}
		i = skipWS(b, i)
	}
}

// scanKey reads `"key" :` and the blanks after it at i: the key as
// written (escapes kept) and where its value starts.
func scanKey(b []byte, i int) ([]byte, int, error) {
	if i >= len(b) {
		return nil, i, errJSONEnd
	}
	if b[i] != '"' {
		return nil, i, &jsonSyntaxError{i, "character (want a key)"}
	}
	end, err := skipString(b, i)
	if err != nil {
		return nil, end, err
	}
	key := b[i+1 : end-1]
	if i = skipWS(b, end); i >= len(b) || b[i] != ':' {
		return nil, i, &jsonSyntaxError{i, "character (want ':')"}
	}
	return key, skipWS(b, i+1), nil
}

// skipString returns the index after the string whose opening quote is
// b[i]. It finds the closing quote with IndexByte and counts the
// backslashes before it, so long strings cost little more than a memchr.
func skipString(b []byte, i int) (int, error) {
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			return len(b), errJSONEnd
		}
		j += k
		bs := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			bs++
		}
		j++
		if bs%2 == 0 {
			return j, nil
		}
	}
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, &jsonSyntaxError{i, "literal"}
	}
	return i + len(lit), nil
}

// skipNumber accepts JSON numbers: -?(0|[1-9]digits)[.digits][(e|E)[+-]digits].
func skipNumber(b []byte, i int) (int, error) {
	start := i
	if i < len(b) && b[i] == '-' {
		i++
	}
	d := i
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	switch {
	case i == d:
		return start, &jsonSyntaxError{start, "character (want a value)"}
	case b[d] == '0' && i > d+1:
		return start, &jsonSyntaxError{start, "number (leading zero)"}
	}
	if i < len(b) && b[i] == '.' {
		i++
		d = i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return start, &jsonSyntaxError{start, "number"}
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d = i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		if i == d {
			return start, &jsonSyntaxError{start, "number"}
		}
	}
	return i, nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
		i++
	}
	return i
}
