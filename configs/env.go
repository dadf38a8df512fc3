package configs

import (
	"fmt"
	"strings"
)

// expand replaces every ${NAME} in s by lookup(NAME); "$${" stands for a
// literal "${". A "${" that does not open a well-formed reference is an error
// rather than text kept as is, so that a typo cannot send "${FLEET_KEY" as a
// key upstream.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	i := strings.Index(s, "${")
	if i < 0 {
		return s, nil
	}
	var sb strings.Builder
	sb.Grow(len(s))
	for i >= 0 {
		if i > 0 && s[i-1] == '$' {
			// "$${": the first '$' escapes the reference.
			sb.WriteString(s[:i-1])
			sb.WriteString("${")
			s = s[i+2:]
			i = strings.Index(s, "${")
			continue
		}
		sb.WriteString(s[:i])
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", fmt.Errorf("unterminated reference %q", s[i:])
		}
		name := s[i+2 : i+2+end]
		if !isEnvName(name) {
			return "", fmt.Errorf("invalid variable name in %q", s[i:i+3+end])
		}
		v, ok := lookup(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		sb.WriteString(v)
		s = s[i+3+end:]
		i = strings.Index(s, "${")
	}
	sb.WriteString(s)
	return sb.String(), nil
}

func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
