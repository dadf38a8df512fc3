package configs

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/netip"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Load reads the YAML file at path, replaces ${NAME} in every string value by
// the environment variable, decodes it strictly onto Default(), applies the
// per-client defaults and validates the result.
//
// On any problem it returns (nil, Errors) listing every problem found, each
// naming its key path. An unreadable file or invalid YAML is a single
// FieldError whose Path is path.
func Load(path string) (*Config, error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), yaml.Parser()); err != nil {
		return nil, Errors{fileError(path, err)}
	}
	// Decoding works on the nested map (koanf's Raw), never on flattened
	// keys, so header names holding the delimiter survive intact.
	raw := k.Raw()

	cfg := Default()
	var es Errors
	dc := &mapstructure.DecoderConfig{
		DecodeHook:       mapstructure.DecodeHookFuncValue(decodeHook),
		ErrorUnused:      true,
		WeaklyTypedInput: false,
		TagName:          "koanf",
		// Keys are case-sensitive: "Name" is an unknown key, not name.
		MatchName: func(mapKey, fieldName string) bool { return mapKey == fieldName },
	}
	if err := k.UnmarshalWithConf("", cfg, koanf.UnmarshalConf{DecoderConfig: dc}); err != nil {
		addDecodeErrors(&es, err, path)
	}
	applyClientDefaults(cfg, raw["openai_clients"])

	// A key that failed to decode holds its zero value; checking it again
	// would only add a misleading "required".
	for _, fe := range cfg.validate() {
		if !coveredBy(es, fe.Path) {
			es = append(es, fe)
		}
	}
	if len(es) > 0 {
		es.sort()
		return nil, es
	}
	return cfg, nil
}

func coveredBy(es Errors, path string) bool {
	for _, fe := range es {
		if covers(fe.Path, path) {
			return true
		}
	}
	return false
}

func fileError(path string, err error) *FieldError {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &FieldError{Path: path, Msg: "cannot read: " + pe.Err.Error()}
	}
	// yaml.v3 says "yaml: line 3: …", or "yaml: unmarshal errors:" and
	// one indented line per problem.
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:")
	parts := strings.Split(msg, "\n")
	kept := parts[:0]
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			kept = append(kept, p)
		}
	}
	return &FieldError{Path: path, Msg: "invalid YAML: " + strings.Join(kept, "; ")}
}

// applyClientDefaults sets the defaults of the keys whose zero value means
// something else (priority 0 is a standby, stream_usage false is a choice),
// so it looks at which keys each raw list item holds.
func applyClientDefaults(cfg *Config, raw any) {
	items, _ := raw.([]any)
	for i := range cfg.Clients {
		c := &cfg.Clients[i]
		var m map[string]any
		if i < len(items) {
			m, _ = items[i].(map[string]any)
		}
		if m["priority"] == nil {
			c.Priority = DefaultPriority
		}
		if m["stream_usage"] == nil {
			c.StreamUsage = true
		}
		if c.KeyMode == "" {
			c.KeyMode = KeyModeConfig
		}
		if c.MaxConns == 0 {
			c.MaxConns = DefaultMaxConns
		}
	}
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	stringsType  = reflect.TypeFor[[]string]()
	// The type of Server.TrustedNets, which no key may fill.
	prefixesType = reflect.TypeFor[[]netip.Prefix]()
)

// errUnknownKey is what the decode hook reports for a key that matched a
// field with no key of its own (tag "-", which mapstructure still matches).
var errUnknownKey = errors.New("unknown key")

// decodeHook runs before mapstructure stores any value. It does the type
// checks itself, so every mismatch reads the same way ("must be an integer,
// got string \"high\""), expands ${ENV} in strings, parses durations from
// strings only (a bare 30 would silently mean 30ns), and lets a lone string
// stand for a one-item list.
func decodeHook(from, to reflect.Value) (any, error) {
	data := from.Interface()
	tt := to.Type()
	switch tt {
	case durationType:
		s, ok := data.(string)
		if !ok {
			return nil, fmt.Errorf("must be a duration such as \"30s\" or \"200ms\", got %s", describe(data))
		}
		s, err := expand(s, os.LookupEnv)
		if err != nil {
			return nil, err
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, fmt.Errorf("must be a duration such as \"30s\" or \"200ms\", got %q", s)
		}
		return d, nil
	case prefixesType:
		return nil, errUnknownKey
	}
	switch tt.Kind() {
	case reflect.String:
		s, ok := data.(string)
		if !ok {
			return nil, fmt.Errorf("must be a string, got %s", describe(data))
		}
		return expand(s, os.LookupEnv)
	case reflect.Bool:
		if _, ok := data.(bool); !ok {
			return nil, fmt.Errorf("must be true or false, got %s", describe(data))
		}
	case reflect.Int, reflect.Int64:
		switch v := data.(type) {
		case int, int64:
		case uint64:
			if v > math.MaxInt64 {
				return nil, fmt.Errorf("must be an integer that fits in 64 bits, got %d", v)
			}
		case float64:
			if v != math.Trunc(v) || math.Abs(v) > 1<<53 {
				return nil, fmt.Errorf("must be an integer, got %s", describe(data))
			}
			return int64(v), nil
		default:
			return nil, fmt.Errorf("must be an integer, got %s", describe(data))
		}
	case reflect.Slice:
		if tt == stringsType {
			if s, ok := data.(string); ok {
				// Each item is decoded (and expanded) on its own.
				return []any{s}, nil
			}
		}
		if from.Kind() != reflect.Slice {
			if tt == stringsType {
				return nil, fmt.Errorf("must be a string or a list of strings, got %s", describe(data))
			}
			return nil, fmt.Errorf("must be a list, got %s", describe(data))
		}
	case reflect.Struct, reflect.Map:
		if from.Kind() != reflect.Map {
			return nil, fmt.Errorf("must be a mapping, got %s", describe(data))
		}
	}
	return data, nil
}

// describe names a YAML value for an error message.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		return "string " + strconv.Quote(v)
	case bool:
		return "boolean " + strconv.FormatBool(v)
	case int, int64, uint64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return "number " + strconv.FormatFloat(v, 'g', -1, 64)
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Map:
		return "a mapping"
	case reflect.Slice:
		return "a list"
	}
	return fmt.Sprintf("%T", v)
}

// rootName is how mapstructure names the top level when it reports unknown
// keys there.
var rootName = reflect.TypeFor[Config]().String()

// addDecodeErrors turns mapstructure's error tree into FieldErrors. Its
// DecodeError names are already our key paths (server.listen,
// openai_clients[1].headers[X-Team]); unknown keys arrive as one error per
// mapping, "has invalid keys: a, b", and become one FieldError per key.
func addDecodeErrors(es *Errors, err error, file string) {
	switch e := err.(type) {
	case interface{ Unwrap() []error }:
		for _, sub := range e.Unwrap() {
			addDecodeErrors(es, sub, file)
		}
		return
	case *mapstructure.DecodeError:
		name, inner := e.Name(), e.Unwrap()
		if name == rootName {
			name = ""
		}
		if keys, ok := strings.CutPrefix(inner.Error(), "has invalid keys: "); ok {
			for _, key := range strings.Split(keys, ", ") {
				es.add(joinPath(name, key), errUnknownKey.Error())
			}
			return
		}
		if name == "" {
			name = file
		}
		es.add(name, inner.Error())
		return
	}
	if inner := errors.Unwrap(err); inner != nil {
		addDecodeErrors(es, inner, file)
		return
	}
	es.add(file, err.Error())
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}
