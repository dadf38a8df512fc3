package configs

import (
	"slices"
	"strings"
)

// FieldError is one problem of a configuration file. Path is the key path
// (openai_clients[2].model_match.type), or the file name for a problem of the
// whole file (unreadable, not YAML).
type FieldError struct {
	Path, Msg string
}

// Error returns Path + ": " + Msg, the line users grep for.
func (fe *FieldError) Error() string {
	if fe.Path == "" {
		return fe.Msg
	}
	return fe.Path + ": " + fe.Msg
}

// Errors is every problem found in one file, ordered by key path (list
// indexes compare as numbers). Load returns it as a value; both
// errors.As(err, &es) with es of type Errors and with es of type *Errors work.
type Errors []*FieldError

// Error returns one problem per line.
func (e Errors) Error() string {
	var sb strings.Builder
	for i, fe := range e {
		if i > 0 {
			sb.WriteByte('\n')
		}
		sb.WriteString(fe.Error())
	}
	return sb.String()
}

// As lets errors.As fill a *Errors target too, so callers need not guess
// which of the two forms Load returns.
func (e Errors) As(target any) bool {
	if p, ok := target.(**Errors); ok {
		*p = &e
		return true
	}
	return false
}

func (e *Errors) add(path, msg string) {
	*e = append(*e, &FieldError{Path: path, Msg: msg})
}

func (e Errors) sort() {
	slices.SortStableFunc(e, func(a, b *FieldError) int { return comparePaths(a.Path, b.Path) })
}

// comparePaths orders key paths naturally: runs of digits compare as numbers,
// so openai_clients[2] sorts before openai_clients[10].
func comparePaths(a, b string) int {
	for a != "" && b != "" {
		if isDigit(a[0]) && isDigit(b[0]) {
			na, nb := digitRun(a), digitRun(b)
			// Without leading zeros, a longer run is a bigger number.
			da, db := strings.TrimLeft(a[:na], "0"), strings.TrimLeft(b[:nb], "0")
			if c := len(da) - len(db); c != 0 {
				return c
			}
			if c := strings.Compare(da, db); c != 0 {
				return c
			}
			a, b = a[na:], b[nb:]
			continue
		}
		if a[0] != b[0] {
			return int(a[0]) - int(b[0])
		}
		a, b = a[1:], b[1:]
	}
	return len(a) - len(b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func digitRun(s string) int {
	n := 0
	for n < len(s) && isDigit(s[n]) {
		n++
	}
	return n
}

// covers reports whether a problem at path p makes a problem at q redundant:
// q is p or lies beneath it.
func covers(p, q string) bool {
	if !strings.HasPrefix(q, p) {
		return false
	}
	rest := q[len(p):]
	return rest == "" || rest[0] == '.' || rest[0] == '['
}
