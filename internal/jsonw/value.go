package jsonw

import "github.com/valyala/fastjson"

// AppendValue appends v as JSON text, every string and key through
// AppendString; numbers, true, false and null as fastjson keeps them.
//
// fastjson's own MarshalTo writes a string it has decoded, or one made with
// Arena.NewString, through strconv.AppendQuote as soon as it holds a quote,
// a backslash or a control character. That is Go syntax, and not JSON for
// the other control characters (\a, \v, \x01), for bytes that are not
// UTF-8 (\x83) or for non-printable runes past U+FFFF (\U000e0067, in
// subdivision flag emoji), so a rewritten message or answer with one of
// those would reach the upstream or the caller as invalid JSON. Strings
// fastjson had not decoded come out decoded and escaped again: the same
// JSON value, perhaps with other escapes. (A lone UTF-16 surrogate escape,
// \ud800 without its pair, fastjson leaves undecoded: it comes out as that
// text, where encoding/json would read U+FFFD.)
func AppendValue(dst []byte, v *fastjson.Value) []byte { return AppendValueWith(dst, v, nil) }

// AppendValueWith is AppendValue with every number appended by number
// instead, when it is not nil: the record writer's way to give numbers the
// one form both its parsers produce.
func AppendValueWith(dst []byte, v *fastjson.Value, number func(dst []byte, v *fastjson.Value) []byte) []byte {
	switch v.Type() {
	case fastjson.TypeObject:
		o, _ := v.Object()
		dst = append(dst, '{')
		n := 0
		o.Visit(func(key []byte, e *fastjson.Value) {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = AppendString(dst, key)
			dst = append(dst, ':')
			dst = AppendValueWith(dst, e, number)
		})
		return append(dst, '}')
	case fastjson.TypeArray:
		dst = append(dst, '[')
		for i, e := range v.GetArray() {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = AppendValueWith(dst, e, number)
		}
		return append(dst, ']')
	case fastjson.TypeString:
		return AppendString(dst, v.GetStringBytes())
	case fastjson.TypeNumber:
		if number != nil {
			return number(dst, v)
		}
	}
	return v.MarshalTo(dst)
}
