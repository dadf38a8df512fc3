package configs

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeConfig writes text to a fresh file and returns its path.
func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// problems loads text and returns every problem line.
func problems(t *testing.T, text string) []string {
	t.Helper()
	cfg, err := Load(writeConfig(t, text))
	if err == nil {
		return nil
	}
	if cfg != nil {
		t.Fatalf("Load returned a config along with %v", err)
	}
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Load error is %T, want Errors: %v", err, err)
	}
	lines := make([]string, len(es))
	for i, fe := range es {
		lines[i] = fe.Error()
	}
	if got := err.Error(); got != strings.Join(lines, "\n") {
		t.Fatalf("Errors.Error() = %q, want one problem per line", got)
	}
	return lines
}

func mustLoad(t *testing.T, text string) *Config {
	t.Helper()
	cfg, err := Load(writeConfig(t, text))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return cfg
}

// A valid client in flow style, so a case can add or change one key.
const (
	okClient  = `{name: c, base_url: "http://127.0.0.1:9001/v1", model_match: {type: keyword, value: qwen}`
	okClient2 = `{name: c2, base_url: "http://127.0.0.1:9002/v1", model_match: {type: keyword, value: qwen}`
)

func TestLoadShipped(t *testing.T) {
	for _, k := range []string{"GPTAPI_KEY_TEAM_A", "GPTAPI_KEY_TEAM_B", "GPTAPI_KEY", "OPENAI_API_KEY", "OPENROUTER_API_KEY"} {
		t.Setenv(k, "value-of-"+k)
	}
	files, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("examples: %v %v", files, err)
	}
	for _, f := range append([]string{"config.yaml"}, files...) {
		cfg, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(cfg.Clients) == 0 {
			t.Errorf("%s: no clients", f)
		}
	}

	cfg, err := Load("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server.Listen != ":8080" || cfg.Logsink.Path != "data/gptapi.db" || cfg.Logsink.SpillDir != "data/spill" {
		t.Errorf("config.yaml: listen %q, logsink %q, spill %q", cfg.Server.Listen, cfg.Logsink.Path, cfg.Logsink.SpillDir)
	}
	want := []struct {
		name, url string
		prio      int
	}{
		{"mock-a", "http://127.0.0.1:9001/v1", 3},
		{"mock-b", "http://127.0.0.1:9002/v1", 1},
		{"mock-standby", "http://127.0.0.1:9003/v1", 0},
	}
	for i, w := range want {
		c := cfg.Clients[i]
		if c.Name != w.name || c.BaseURL != w.url || c.Priority != w.prio ||
			c.Match.Type != MatchKeyword || !slices.Equal(c.Match.Value, []string{"qwen", "llama", "gpt"}) {
			t.Errorf("config.yaml client %d = %+v, want %s at %s priority %d matching [qwen llama gpt]", i, c, w.name, w.url, w.prio)
		}
	}

	cfg, err = Load("examples/openai.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Clients[0].APIKey; got != "value-of-OPENAI_API_KEY" {
		t.Errorf("openai.yaml api_key = %q, want the expanded ${OPENAI_API_KEY}", got)
	}
	if got := cfg.Clients[1].KeyMode; got != KeyModePassthrough {
		t.Errorf("openai.yaml key_mode = %q", got)
	}
}

func TestLoadProblems(t *testing.T) {
	t.Setenv("FLEET_A_KEY", "")
	os.Unsetenv("FLEET_A_KEY")
	f := func(text, want string) {
		t.Helper()
		got := problems(t, text)
		if len(got) != 1 || got[0] != want {
			t.Errorf("problems of\n%s\n= %q\nwant only %q", text, got, want)
		}
	}
	clients := func(items ...string) string {
		return "openai_clients:\n  - " + strings.Join(items, "\n  - ") + "\n"
	}

	// Strict decoding: unknown keys, at any depth, matched case-sensitively.
	f("serve: {}\n", "serve: unknown key")
	f("server: {listn: ':8080'}\n", "server.listn: unknown key")
	f(clients(okClient+"}", okClient2+", modle: qwen}"), "openai_clients[1].modle: unknown key")
	f(clients(okClient+", Name: x}"), "openai_clients[0].Name: unknown key")
	f(clients(`{name: c, base_url: "http://h/v1", model_match: {type: exact, value: a, regex: b}}`), "openai_clients[0].model_match.regex: unknown key")
	f("server: {'-': [10.0.0.0/8]}\n", "server.-: unknown key")

	// Strict decoding: wrong types, no weak conversions.
	f("server: {listen: 8080}\n", "server.listen: must be a string, got integer 8080")
	f("server: {max_body_bytes: '1024'}\n", `server.max_body_bytes: must be an integer, got string "1024"`)
	f("server: {read_timeout: 30}\n", `server.read_timeout: must be a duration such as "30s" or "200ms", got integer 30`)
	f("check_config: {cooldown: 5 minutes}\n", `check_config.cooldown: must be a duration such as "30s" or "200ms", got "5 minutes"`)
	f("logsink: {store_bodies: 'yes'}\n", `logsink.store_bodies: must be true or false, got string "yes"`)
	f(clients(okClient+", max_tokens: 1.5}"), "openai_clients[0].max_tokens: must be an integer, got number 1.5")
	f(clients(okClient+", model: [a, b]}"), "openai_clients[0].model: must be a string, got a list")
	f(clients(okClient+", stop: {a: b}}"), "openai_clients[0].stop: must be a string or a list of strings, got a mapping")
	f(clients(okClient+", headers: {X-A: 5}}"), "openai_clients[0].headers[X-A]: must be a string, got integer 5")
	f(clients(`{name: c, base_url: "http://h/v1", model_match: qwen}`), `openai_clients[0].model_match: must be a mapping, got string "qwen"`)
	f("openai_clients: {name: c}\n", "openai_clients: must be a list, got a mapping")
	f("auth: [a]\n", "auth: must be a mapping, got a list")

	// ${ENV} references.
	f(clients(okClient+", api_key: '${FLEET_A_KEY}'}"), "openai_clients[0].api_key: environment variable FLEET_A_KEY is not set")
	f(clients(okClient+", api_key: 'sk-${FLEET_A_KEY'}"), `openai_clients[0].api_key: unterminated reference "${FLEET_A_KEY"`)
	f(clients(okClient+", api_key: '${1X}'}"), `openai_clients[0].api_key: invalid variable name in "${1X}"`)

	// Required client keys and unique names.
	f(clients(`{base_url: "http://h/v1", model_match: {type: exact, value: a}}`), "openai_clients[0].name: required")
	f(clients(`{name: c, model_match: {type: exact, value: a}}`), "openai_clients[0].base_url: required")
	f(clients(`{name: c, base_url: "http://h/v1"}`), "openai_clients[0].model_match: required")
	f(clients(
		`{name: fleet-a, base_url: "http://h1/v1", model_match: {type: exact, value: a}}`,
		`{name: fleet-b, base_url: "http://h2/v1", model_match: {type: exact, value: a}}`,
		`{name: fleet-c, base_url: "http://h3/v1", model_match: {type: exact, value: a}}`,
		`{name: fleet-a, base_url: "http://h4/v1", model_match: {type: exact, value: a}}`,
	), `openai_clients[3].name: duplicate "fleet-a"`)

	// Client values.
	f(clients(`{name: c, base_url: "ftp://h/v1", model_match: {type: exact, value: a}}`), `openai_clients[0].base_url: must be an http or https URL, got "ftp://h/v1"`)
	f(clients(`{name: c, base_url: "h:8000/v1", model_match: {type: exact, value: a}}`), `openai_clients[0].base_url: must be an http or https URL, got "h:8000/v1"`)
	f(clients(`{name: c, base_url: "http:///v1", model_match: {type: exact, value: a}}`), `openai_clients[0].base_url: missing host in "http:///v1"`)
	f(clients(`{name: c, base_url: "http://[::1/v1", model_match: {type: exact, value: a}}`), `openai_clients[0].base_url: invalid URL "http://[::1/v1"`)
	f(clients(`{name: c, base_url: "http://h/v1?x=1", model_match: {type: exact, value: a}}`), `openai_clients[0].base_url: must not have a query or fragment, got "http://h/v1?x=1"`)
	f(clients(`{name: c, base_url: "http://u:p@h/v1", model_match: {type: exact, value: a}}`), `openai_clients[0].base_url: must not carry credentials (use api_key or headers), got "http://u:xxxxx@h/v1"`)
	f(clients(okClient+"}", okClient2+"}", `{name: d, base_url: "http://h/v1", model_match: {type: regex, value: a}}`),
		`openai_clients[2].model_match.type: must be "exact" or "keyword", got "regex"`)
	f(clients(`{name: c, base_url: "http://h/v1", model_match: {type: exact, value: []}}`), "openai_clients[0].model_match.value: must not be empty")
	f(clients(`{name: c, base_url: "http://h/v1", model_match: {type: exact}}`), "openai_clients[0].model_match.value: must not be empty")
	f(clients(`{name: c, base_url: "http://h/v1", model_match: {type: keyword, value: [a, ""]}}`), "openai_clients[0].model_match.value[1]: must not be empty")
	f(clients(okClient+", key_mode: caller}"), `openai_clients[0].key_mode: must be "config" or "passthrough", got "caller"`)
	f(clients(okClient+", priority: -1}"), "openai_clients[0].priority: must not be negative")
	f(clients(okClient+", max_tokens: -1}"), "openai_clients[0].max_tokens: must not be negative")
	f(clients(okClient+", max_conns: -1}"), "openai_clients[0].max_conns: must not be negative")
	f(clients(okClient+", headers: {X Team: a}}"), "openai_clients[0].headers[X Team]: invalid header name")
	f(clients(okClient+", headers: {X-Team: \"a\\r\\nX-Evil: b\"}}"), "openai_clients[0].headers[X-Team]: header value must not contain CR, LF or NUL")
	f(clients(okClient+", api_key: \"sk-1\\r\\nX-Evil: b\"}"), "openai_clients[0].api_key: must not contain CR, LF or NUL")
	f(clients(okClient+", api_key: \"sk-1\\n\"}"), "openai_clients[0].api_key: must not contain CR, LF or NUL")

	// Sections.
	f("server: {listen: ''}\n", "server.listen: required")
	f("server: {listen: '8080'}\n", `server.listen: must be host:port such as ":8080", got "8080"`)
	f("server: {max_body_bytes: 0}\n", "server.max_body_bytes: must be positive, got 0")
	f("server: {read_timeout: -1s}\n", "server.read_timeout: must not be negative")
	f("server: {idle_timeout: -1s}\n", "server.idle_timeout: must not be negative")
	f("server: {shutdown_timeout: -1s}\n", "server.shutdown_timeout: must not be negative")
	f("server: {trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]}\n", `server.trusted_proxies[1]: must be a CIDR or an IP address, got "10.0.0.0/33"`)
	f("server: {trusted_proxies: [proxy.local]}\n", `server.trusted_proxies[0]: must be a CIDR or an IP address, got "proxy.local"`)
	f("auth: {keys: [k1, '']}\n", "auth.keys[1]: must not be empty")
	f("log: {level: verbose}\n", `log.level: must be "debug", "info", "warn" or "error", got "verbose"`)
	f("log: {format: xml}\n", `log.format: must be "text" or "json", got "xml"`)
	f("logsink: {path: ''}\n", "logsink.path: required")
	f("logsink: {queue_size: 0}\n", "logsink.queue_size: must be positive, got 0")
	f("logsink: {batch_size: -5}\n", "logsink.batch_size: must be positive, got -5")
	f("logsink: {flush_interval: 0s}\n", "logsink.flush_interval: must be positive")
	f("logsink: {max_body_log_bytes: 0}\n", "logsink.max_body_log_bytes: must be positive, got 0")
	f("logsink: {spill_dir: ''}\n", "logsink.spill_dir: required")
	f("preprocess: {merge_user: join}\n", `preprocess.merge_user: must be "merge", "last" or "off", got "join"`)
	f("check_config: {connect_timeout: -1s}\n", "check_config.connect_timeout: must not be negative")
	f("check_config: {first_byte_timeout: -1s}\n", "check_config.first_byte_timeout: must not be negative")
	f("check_config: {stream_idle_timeout: -1s}\n", "check_config.stream_idle_timeout: must not be negative")
	f("check_config: {request_timeout: -1s}\n", "check_config.request_timeout: must not be negative")
	f("check_config: {failure_threshold: 0}\n", "check_config.failure_threshold: must be positive, got 0")
	f("check_config: {cooldown: -5s}\n", "check_config.cooldown: must not be negative")
	f("check_config: {max_fallback_depth: -1}\n", "check_config.max_fallback_depth: must not be negative")
	f("check_config: {models_timeout: -1s}\n", "check_config.models_timeout: must not be negative")
	f("check_config: {models_cache_ttl: -1s}\n", "check_config.models_cache_ttl: must not be negative")
	f("check_config: {max_response_bytes: 0}\n", "check_config.max_response_bytes: must be positive, got 0")
	f("check_config: {max_conn_wait: -1s}\n", "check_config.max_conn_wait: must not be negative")
	f("server: {send_timeout: -1s}\n", "server.send_timeout: must not be negative")
	f("logsink: {max_pending_bytes: 0}\n", "logsink.max_pending_bytes: must be positive, got 0")
	f("logsink: {driver: mysql}\n", `logsink.driver: must be "sqlite" or "postgres", got "mysql"`)
	f("logsink: {driver: postgres}\n", `logsink.dsn: required with driver "postgres"`)
	f("logsink: {dsn: 'postgres://h/db'}\n", `logsink.dsn: only used with driver "postgres"; remove it or set logsink.driver: postgres`)
	// a malformed dsn is named, its password never shown
	f("logsink: {driver: postgres, dsn: 'postgres://u:hunter2@[::1/db'}\n", `logsink.dsn: not a valid PostgreSQL connection string (postgres://user:pass@host:5432/db?sslmode=disable, or key=value pairs)`)
	f("logsink: {driver: postgres, dsn: 'postgres://u:hunter2@h:99999/db'}\n", `logsink.dsn: not a valid PostgreSQL connection string (postgres://user:pass@host:5432/db?sslmode=disable, or key=value pairs)`)
	f("routing: {strategy: random}\n", `routing.strategy: must be "weighted", "least_loaded" or "prefix", got "random"`)
	f("routing: {poll_interval: 0s}\n", "routing.poll_interval: must be positive")
	f("routing: {poll_interval: -1s}\n", "routing.poll_interval: must be positive")
	f(clients(okClient+", metrics_url: 'localhost:8000/metrics'}"), `openai_clients[0].metrics_url: must be an http or https URL, got "localhost:8000/metrics"`)
	f(clients(okClient+", metrics_url: 'http:///metrics'}"), `openai_clients[0].metrics_url: missing host in "http:///metrics"`)
	f("routing: {block_bytes: 0}\n", "routing.block_bytes: must be positive, got 0")
	f("routing: {block_bytes: 2097152}\n", "routing.block_bytes: must be at most 1048576, got 2097152")
	f("routing: {key_bytes: -1}\n", "routing.key_bytes: must be positive, got -1")
	f("routing: {index_bytes: 64}\n", "routing.index_bytes: must be at least 128 (one set of 8 entries), got 64")
	f("routing: {balance_abs: -1}\n", "routing.balance_abs: must be a number of requests, 0 or more, got -1")
	f("routing: {balance_rel: 0.5}\n", "routing.balance_rel: must be a ratio of 1 or more, got 0.5")
	f("routing: {balance_rel: .nan}\n", "routing.balance_rel: must be a ratio of 1 or more, got NaN")
}

func TestLoadAllowed(t *testing.T) {
	f := func(text string) {
		t.Helper()
		if got := problems(t, text); got != nil {
			t.Errorf("problems of\n%s\n= %q, want none", text, got)
		}
	}
	f("")                                                                  // every default, no clients
	f("openai_clients: []\n")                                              // no clients: the proxy answers 404
	f("openai_clients:\n  - " + okClient + ", fallback: no-such-model}\n") // a fallback nobody serves
	f("openai_clients:\n  - " + okClient + ", stop: '###'}\n")             // a lone stop string
	f("openai_clients:\n  - " + okClient + ", max_tokens: 8192.0}\n")      // an integral float
	f("server: {trusted_proxies: ['::1', 10.1.2.3/8]}\n")
	f("check_config: {max_fallback_depth: 0, cooldown: 0s}\n")
	f("routing: {strategy: prefix, poll_interval: 250ms}\n")
	f("routing: {strategy: least_loaded, block_bytes: 2048, key_bytes: 8192, index_bytes: 128, balance_abs: 0, balance_rel: 1}\n")
	f("routing: {balance_abs: 4.5, balance_rel: 2}\n") // an integer where a number goes
	f("openai_clients:\n  - " + okClient + ", metrics_url: 'http://h:8000/metrics'}\n")
}

// A file with many problems reports each of them once, sorted by path, and
// a key that failed to decode is not reported again by validation.
func TestLoadCollectsEveryProblem(t *testing.T) {
	got := problems(t, `
server:
  listen: 8080
  read_timeout: -1s
log: {level: loud}
check_config: {cooldown: -5s}
openai_clients:
  - {name: 7, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: b, base_url: "ftp://h", model_match: {type: regex, value: a}, modle: x}
  - {name: b, base_url: "http://h/v1", model_match: {type: exact, value: a}, priority: -2}
  - {name: d, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: e, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: f, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: g, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: h, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: i, base_url: "http://h/v1", model_match: {type: exact, value: a}}
  - {name: j, base_url: "http://h/v1", model_match: {type: exact}}
`)
	want := []string{
		"check_config.cooldown: must not be negative",
		`log.level: must be "debug", "info", "warn" or "error", got "loud"`,
		"openai_clients[0].name: must be a string, got integer 7",
		`openai_clients[1].base_url: must be an http or https URL, got "ftp://h"`,
		`openai_clients[1].model_match.type: must be "exact" or "keyword", got "regex"`,
		"openai_clients[1].modle: unknown key",
		`openai_clients[2].name: duplicate "b"`,
		"openai_clients[2].priority: must not be negative",
		"openai_clients[9].model_match.value: must not be empty",
		"server.listen: must be a string, got integer 8080",
		"server.read_timeout: must not be negative",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestLoadFileProblems(t *testing.T) {
	f := func(path, wantMsg string) {
		t.Helper()
		_, err := Load(path)
		var es Errors
		if !errors.As(err, &es) || len(es) != 1 {
			t.Fatalf("Load(%s) = %v, want one FieldError", path, err)
		}
		if es[0].Path != path || !strings.HasPrefix(es[0].Msg, wantMsg) {
			t.Errorf("Load(%s) = %q, want path %q and a message starting %q", path, es[0].Error(), path, wantMsg)
		}
	}
	f(filepath.Join(t.TempDir(), "missing.yaml"), "cannot read: no such file or directory")
	f(writeConfig(t, "server:\n  listen: \":8080\"\n   read_timeout: 5s\n"), "invalid YAML: line ")
	f(writeConfig(t, "server: {listen: ':1'}\nserver: {listen: ':2'}\n"), "invalid YAML: line 2: mapping key \"server\" already defined")
	f(writeConfig(t, "- a\n- b\n"), "invalid YAML:")
	f(writeConfig(t, "\t"), "invalid YAML:")
}

func TestLoadEnv(t *testing.T) {
	t.Setenv("T_KEY", "sk-secret")
	t.Setenv("T_HOST", "10.0.0.5:8000")
	t.Setenv("T_STOP", "</s>")
	t.Setenv("T_TEAM", "research")
	t.Setenv("T_COOL", "45s")
	t.Setenv("T_EMPTY", "")
	cfg := mustLoad(t, `
auth: {keys: ["${T_KEY}"]}
check_config: {cooldown: "${T_COOL}"}
openai_clients:
  - name: c
    base_url: http://${T_HOST}/v1
    api_key: ${T_KEY}
    model_match: {type: keyword, value: ["${T_TEAM}-qwen", plain]}
    stop: ["${T_STOP}", "a${T_EMPTY}b"]
    special_prefix: "$${T_KEY} is literal"
    headers: {X-Team: "team ${T_TEAM}", X.Trace.Id: "t-1"}
`)
	c := cfg.Clients[0]
	if c.BaseURL != "http://10.0.0.5:8000/v1" || c.APIKey != "sk-secret" {
		t.Errorf("base_url %q, api_key %q", c.BaseURL, c.APIKey)
	}
	if !slices.Equal(c.Match.Value, []string{"research-qwen", "plain"}) || !slices.Equal(c.Stop, []string{"</s>", "ab"}) {
		t.Errorf("model_match.value %q, stop %q", c.Match.Value, c.Stop)
	}
	// A header name holding koanf's delimiter stays one key.
	if c.Headers["X-Team"] != "team research" || c.Headers["X.Trace.Id"] != "t-1" || len(c.Headers) != 2 ||
		c.SpecialPrefix != "${T_KEY} is literal" {
		t.Errorf("headers %q, special_prefix %q", c.Headers, c.SpecialPrefix)
	}
	if cfg.Auth.Keys[0] != "sk-secret" || cfg.Check.Cooldown != 45*time.Second {
		t.Errorf("auth.keys %q, cooldown %v", cfg.Auth.Keys, cfg.Check.Cooldown)
	}
}

func TestLoadEnvUnsetInLists(t *testing.T) {
	t.Setenv("T_UNSET", "")
	os.Unsetenv("T_UNSET")
	got := problems(t, `
auth: {keys: [ok, "${T_UNSET}"]}
openai_clients:
  - {name: c, base_url: "http://h/v1", model_match: {type: exact, value: a}, headers: {X-A: "${T_UNSET}"}}
`)
	want := []string{
		"auth.keys[1]: environment variable T_UNSET is not set",
		"openai_clients[0].headers[X-A]: environment variable T_UNSET is not set",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems = %q, want %q", got, want)
	}
}

func TestDefault(t *testing.T) {
	d := Default()
	want := &Config{
		Server: Server{Listen: ":8080", MaxBodyBytes: 16777216, ReadTimeout: 60 * time.Second,
			IdleTimeout: 120 * time.Second, ShutdownTimeout: 30 * time.Second, SendTimeout: 60 * time.Second},
		Log: Log{Level: "info", Format: "text"},
		Logsink: Logsink{Path: "data/gptapi.db", QueueSize: 65536, BatchSize: 512,
			FlushInterval: 200 * time.Millisecond, StoreBodies: true, MaxBodyLogBytes: 1048576, SpillDir: "data/spill",
			MaxPendingBytes: 256 << 20, Driver: "sqlite"},
		Preprocess: Preprocess{Strip: true, StripThink: true, DropEmpty: true, MergeUser: "merge"},
		Check: Check{ConnectTimeout: 5 * time.Second, FirstByteTimeout: 60 * time.Second,
			StreamIdleTimeout: 60 * time.Second, RequestTimeout: 600 * time.Second, FailureThreshold: 3,
			Cooldown: 30 * time.Second, MaxFallbackDepth: 3, ModelsTimeout: 5 * time.Second, ModelsCacheTTL: 30 * time.Second,
			MaxResponseBytes: 64 << 20, MaxConnWait: time.Second},
		Routing: Routing{Strategy: "weighted", PollInterval: time.Second, BlockBytes: 1024, KeyBytes: 2048,
			IndexBytes: 32 << 20, BalanceAbs: 4, BalanceRel: 1.25},
	}
	if !reflect.DeepEqual(d, want) {
		t.Errorf("Default() = %+v\nwant %+v", d, want)
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate() = %v", err)
	}
	if got := mustLoad(t, ""); !reflect.DeepEqual(got, want) {
		t.Errorf("Load(empty file) = %+v\nwant %+v", got, want)
	}
	if got := mustLoad(t, "server: ~\nlog:\nopenai_clients:\n"); !reflect.DeepEqual(got, want) {
		t.Errorf("Load(null sections) = %+v\nwant %+v", got, want)
	}
}

func TestLoadClientDefaults(t *testing.T) {
	cfg := mustLoad(t, `
server: {trusted_proxies: [10.1.2.3/8, 192.168.0.7, "::ffff:10.0.0.1", "fd00::/8"]}
openai_clients:
  - {name: absent, base_url: "http://h:1/v1/", model_match: {type: exact, value: a}}
  - {name: explicit, base_url: "https://h/v1", model_match: {type: exact, value: a}, priority: 0, stream_usage: false, key_mode: passthrough, max_conns: 8}
  - {name: nulls, base_url: "https://h/v1", model_match: {type: exact, value: a}, priority: ~, stream_usage: ~, key_mode: "", max_conns: 0}
`)
	f := func(i int, prio int, usage bool, keyMode string, maxConns int) {
		t.Helper()
		c := cfg.Clients[i]
		if c.Priority != prio || c.StreamUsage != usage || c.KeyMode != keyMode || c.MaxConns != maxConns {
			t.Errorf("%s: priority %d stream_usage %v key_mode %q max_conns %d, want %d %v %q %d",
				c.Name, c.Priority, c.StreamUsage, c.KeyMode, c.MaxConns, prio, usage, keyMode, maxConns)
		}
	}
	f(0, 1, true, "config", 1024)
	f(1, 0, false, "passthrough", 8)
	f(2, 1, true, "config", 1024)

	if got := cfg.Clients[0].BaseURL; got != "http://h:1/v1" {
		t.Errorf("base_url = %q, want the trailing slash trimmed", got)
	}
	wantNets := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.0.7/32"),
		netip.MustParsePrefix("10.0.0.1/32"),
		netip.MustParsePrefix("fd00::/8"),
	}
	if !slices.Equal(cfg.Server.TrustedNets, wantNets) {
		t.Errorf("TrustedNets = %v, want %v", cfg.Server.TrustedNets, wantNets)
	}
}

func TestErrorsAs(t *testing.T) {
	_, err := Load(writeConfig(t, "log: {level: loud}\nserve: {}\n"))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("errors.As(Errors) on %v", err)
	}
	var pes *Errors
	if !errors.As(err, &pes) || len(*pes) != 2 {
		t.Fatalf("errors.As(*Errors) on %v", err)
	}
	fe := es[1]
	if fe.Path != "serve" || fe.Msg != "unknown key" || fe.Error() != "serve: unknown key" {
		t.Errorf("FieldError = %+v, Error() %q", fe, fe.Error())
	}
}

func TestValidateInCode(t *testing.T) {
	c := Default()
	c.Clients = []Client{{Name: "a", BaseURL: "http://h/v1/", KeyMode: KeyModeConfig, Match: Match{Type: MatchExact, Value: []string{"m"}}}}
	c.Server.TrustedProxies = []string{"10.0.0.1"}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Clients[0].BaseURL != "http://h/v1" || len(c.Server.TrustedNets) != 1 {
		t.Errorf("Validate did not complete the config: %q %v", c.Clients[0].BaseURL, c.Server.TrustedNets)
	}
	c.Clients[0].KeyMode = ""
	if err := c.Validate(); err == nil || err.Error() != `openai_clients[0].key_mode: must be "config" or "passthrough", got ""` {
		t.Errorf("Validate = %v", err)
	}
}

// FuzzLoad loads any bytes as a config file: never a panic; either a config
// that passes validation, or errors that each name a key path (or the
// file) and say what is wrong.
func FuzzLoad(f *testing.F) {
	for _, p := range []string{"config.yaml", "examples/mixed-fallbacks.yaml", "examples/openai.yaml", "examples/vllm-fleet.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("openai_clients: [{name: a, base_url: 'http://x/v1', model_match: {type: exact, value: m}}]"))
	f.Add([]byte("server: {listen: ':1'}\nopenai_clients: ~\nrouting: {strategy: prefix}"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var cfg *Config
		var err error
		done := make(chan struct{})
		go func() { cfg, err = Load(path); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("Load took over 5 s on %q", data)
		}
		if err == nil {
			if es := cfg.validate(); len(es) > 0 {
				t.Fatalf("loaded a config that does not validate: %v", es)
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %v (%T) is not a list of problems", err, err)
		}
		for _, fe := range es {
			if fe.Path == "" || fe.Msg == "" {
				t.Fatalf("problem without a key path or a message: %+v", fe)
			}
		}
	})
}
