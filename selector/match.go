package selector

// Match appends to dst the indices of the upstreams matching model, in config
// order, and returns the extended slice. It does not allocate when cap(dst)
// suffices.
func (t *Table) Match(dst []int, model string) []int {
	for i := range t.ups {
		if t.matches(i, model) {
			dst = append(dst, i)
		}
	}
	return dst
}

func (t *Table) matches(i int, model string) bool {
	if t.ups[i].Exact {
		for _, v := range t.ups[i].Values {
			if v == model {
				return true
			}
		}
		return false
	}
	for _, v := range t.folded[i] {
		if containsFold(model, v) {
			return true
		}
	}
	return false
}

// containsFold reports whether sub occurs in s when ASCII letters of s are
// lowercased. sub must already be lowercased with asciiLower. Non-ASCII bytes
// compare exactly, so multi-byte UTF-8 sequences never fold.
func containsFold(s, sub string) bool {
	n := len(sub)
	if n == 0 {
		return true
	}
	c0 := sub[0]
	for i := 0; i+n <= len(s); i++ {
		if lowerByte(s[i]) != c0 {
			continue
		}
		j := 1
		for j < n && lowerByte(s[i+j]) == sub[j] {
			j++
		}
		if j == n {
			return true
		}
	}
	return false
}

func lowerByte(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// asciiLower lowercases ASCII letters only, unlike strings.ToLower, to agree
// with containsFold on non-ASCII input.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lowerByte(c)
	}
	return string(b)
}

// Label returns the model_match value through which model matches an
// upstream (the first such upstream in config order), or "other". Metrics
// label requests with it: a value from the config, never the caller's text,
// so callers cannot grow the number or size of series.
func (t *Table) Label(model string) string {
	for i := range t.ups {
		if t.ups[i].Exact {
			for _, v := range t.ups[i].Values {
				if v == model {
					return v
				}
			}
			continue
		}
		for j, v := range t.folded[i] {
			if containsFold(model, v) {
				return t.ups[i].Values[j]
			}
		}
	}
	return "other"
}
