package configs

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Validate checks c as Load does and completes it: it trims trailing slashes
// of base URLs and fills Server.TrustedNets. Load calls it; it is exported for
// configs built in code. Client defaults are not applied here: in code, the
// zero Priority means a standby. It returns nil or Errors.
func (c *Config) Validate() error {
	if es := c.validate(); len(es) > 0 {
		es.sort()
		return es
	}
	return nil
}

func (c *Config) validate() Errors {
	var es Errors
	c.Server.validate(&es)
	for i, k := range c.Auth.Keys {
		if k == "" {
			es.add(fmt.Sprintf("auth.keys[%d]", i), "must not be empty")
		}
	}
	oneOf(&es, "log.level", c.Log.Level, "debug", "info", "warn", "error")
	oneOf(&es, "log.format", c.Log.Format, "text", "json")
	c.Logsink.validate(&es)
	oneOf(&es, "preprocess.merge_user", c.Preprocess.MergeUser, MergeUserMerge, MergeUserLast, MergeUserOff)
	c.Check.validate(&es)
	c.Routing.validate(&es)

	first := make(map[string]int, len(c.Clients))
	for i := range c.Clients {
		cl := &c.Clients[i]
		p := fmt.Sprintf("openai_clients[%d]", i)
		cl.validate(&es, p)
		if cl.Name == "" {
			continue
		}
		if _, dup := first[cl.Name]; dup {
			es.add(p+".name", fmt.Sprintf("duplicate %q", cl.Name))
			continue
		}
		first[cl.Name] = i
	}
	return es
}

func (s *Server) validate(es *Errors) {
	if s.Listen == "" {
		es.add("server.listen", "required")
	} else if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		es.add("server.listen", fmt.Sprintf("must be host:port such as \":8080\", got %q", s.Listen))
	}
	positive(es, "server.max_body_bytes", s.MaxBodyBytes)
	notNegative(es, "server.read_timeout", s.ReadTimeout)
	notNegative(es, "server.idle_timeout", s.IdleTimeout)
	notNegative(es, "server.shutdown_timeout", s.ShutdownTimeout)
	notNegative(es, "server.send_timeout", s.SendTimeout)

	s.TrustedNets = s.TrustedNets[:0]
	for i, v := range s.TrustedProxies {
		p, err := parsePrefix(v)
		if err != nil {
			es.add(fmt.Sprintf("server.trusted_proxies[%d]", i), fmt.Sprintf("must be a CIDR or an IP address, got %q", v))
			continue
		}
		s.TrustedNets = append(s.TrustedNets, p)
	}
	if len(s.TrustedNets) == 0 {
		s.TrustedNets = nil
	}
}

// parsePrefix accepts "10.0.0.0/8" and a bare "10.1.2.3" (one address).
// Host bits are masked off: "10.1.2.3/8" means 10.0.0.0/8.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *Logsink) validate(es *Errors) {
	required(es, "logsink.path", l.Path)
	positive(es, "logsink.queue_size", l.QueueSize)
	positive(es, "logsink.batch_size", l.BatchSize)
	if l.FlushInterval <= 0 {
		es.add("logsink.flush_interval", "must be positive")
	}
	positive(es, "logsink.max_body_log_bytes", l.MaxBodyLogBytes)
	required(es, "logsink.spill_dir", l.SpillDir)
	positive(es, "logsink.max_pending_bytes", l.MaxPendingBytes)
	oneOf(es, "logsink.driver", l.Driver, DriverSQLite, DriverPostgres)
	switch {
	case l.Driver == DriverPostgres && l.DSN == "":
		es.add("logsink.dsn", "required with driver \"postgres\"")
	case l.Driver == DriverSQLite && l.DSN != "":
		es.add("logsink.dsn", "only used with driver \"postgres\"; remove it or set logsink.driver: postgres")
	case l.Driver == DriverPostgres:
		// pgx's own parser, as the record writer uses it. Its error may
		// quote the dsn, so only the verdict is shown: never a password.
		if _, err := pgconn.ParseConfig(l.DSN); err != nil {
			es.add("logsink.dsn", "not a valid PostgreSQL connection string (postgres://user:pass@host:5432/db?sslmode=disable, or key=value pairs)")
		}
	}
}

func (r *Routing) validate(es *Errors) {
	oneOf(es, "routing.strategy", r.Strategy, StrategyWeighted, StrategyLeastLoaded, StrategyPrefix)
	if r.PollInterval <= 0 {
		es.add("routing.poll_interval", "must be positive")
	}
	positive(es, "routing.block_bytes", r.BlockBytes)
	if r.BlockBytes > 1<<20 {
		es.add("routing.block_bytes", fmt.Sprintf("must be at most 1048576, got %d", r.BlockBytes))
	}
	positive(es, "routing.key_bytes", r.KeyBytes)
	if r.IndexBytes < 128 {
		es.add("routing.index_bytes", fmt.Sprintf("must be at least 128 (one set of 8 entries), got %d", r.IndexBytes))
	}
	if r.BalanceAbs < 0 || math.IsNaN(r.BalanceAbs) || math.IsInf(r.BalanceAbs, 0) {
		es.add("routing.balance_abs", fmt.Sprintf("must be a number of requests, 0 or more, got %v", r.BalanceAbs))
	}
	if !(r.BalanceRel >= 1) || math.IsInf(r.BalanceRel, 0) {
		es.add("routing.balance_rel", fmt.Sprintf("must be a ratio of 1 or more, got %v", r.BalanceRel))
	}
}

func (c *Check) validate(es *Errors) {
	notNegative(es, "check_config.connect_timeout", c.ConnectTimeout)
	notNegative(es, "check_config.first_byte_timeout", c.FirstByteTimeout)
	notNegative(es, "check_config.stream_idle_timeout", c.StreamIdleTimeout)
	notNegative(es, "check_config.request_timeout", c.RequestTimeout)
	positive(es, "check_config.failure_threshold", c.FailureThreshold)
	notNegative(es, "check_config.cooldown", c.Cooldown)
	notNegative(es, "check_config.max_fallback_depth", c.MaxFallbackDepth)
	notNegative(es, "check_config.models_timeout", c.ModelsTimeout)
	notNegative(es, "check_config.models_cache_ttl", c.ModelsCacheTTL)
	positive(es, "check_config.max_response_bytes", c.MaxResponseBytes)
	notNegative(es, "check_config.max_conn_wait", c.MaxConnWait)
}

func (c *Client) validate(es *Errors, p string) {
	required(es, p+".name", c.Name)
	if c.BaseURL == "" {
		es.add(p+".base_url", "required")
	} else if msg := checkURL(c.BaseURL); msg != "" {
		es.add(p+".base_url", msg)
	} else {
		c.BaseURL = strings.TrimRight(c.BaseURL, "/")
	}
	oneOf(es, p+".key_mode", c.KeyMode, KeyModeConfig, KeyModePassthrough)

	if c.Match.Type == "" && len(c.Match.Value) == 0 {
		es.add(p+".model_match", "required")
	} else {
		oneOf(es, p+".model_match.type", c.Match.Type, MatchExact, MatchKeyword)
		if len(c.Match.Value) == 0 {
			es.add(p+".model_match.value", "must not be empty")
		}
		for j, v := range c.Match.Value {
			if v == "" {
				es.add(fmt.Sprintf("%s.model_match.value[%d]", p, j), "must not be empty")
			}
		}
	}

	notNegative(es, p+".priority", c.Priority)
	notNegative(es, p+".max_tokens", c.MaxTokens)
	notNegative(es, p+".max_conns", c.MaxConns)
	if c.MetricsURL != "" {
		if msg := checkMetricsURL(c.MetricsURL); msg != "" {
			es.add(p+".metrics_url", msg)
		}
	}
	// The api_key and the headers are written into every upstream request
	// as they are: a line break would end the header early or add one.
	if !validHeaderValue(c.APIKey) {
		es.add(p+".api_key", "must not contain CR, LF or NUL")
	}
	for name, v := range c.Headers {
		hp := p + ".headers[" + name + "]"
		if !validHeaderName(name) {
			es.add(hp, "invalid header name")
		} else if !validHeaderValue(v) {
			es.add(hp, "header value must not contain CR, LF or NUL")
		}
	}
}

// validHeaderValue reports whether v can be written as a header value.
func validHeaderValue(v string) bool { return !strings.ContainsAny(v, "\r\n\x00") }

// checkURL returns why u cannot be a base URL, or "".
func checkURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return fmt.Sprintf("invalid URL %q", u)
	}
	switch {
	case pu.Scheme != "http" && pu.Scheme != "https":
		return fmt.Sprintf("must be an http or https URL, got %q", u)
	case pu.Host == "" || pu.Hostname() == "":
		return fmt.Sprintf("missing host in %q", u)
	case pu.RawQuery != "" || pu.ForceQuery || pu.Fragment != "":
		return fmt.Sprintf("must not have a query or fragment, got %q", u)
	case pu.User != nil:
		return fmt.Sprintf("must not carry credentials (use api_key or headers), got %q", pu.Redacted())
	}
	return ""
}

// checkMetricsURL returns why u cannot be a metrics_url, or "". Unlike a
// base URL it may carry a query (some exporters filter by it).
func checkMetricsURL(u string) string {
	pu, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Sprintf("invalid URL %q", u)
	case pu.Scheme != "http" && pu.Scheme != "https":
		return fmt.Sprintf("must be an http or https URL, got %q", u)
	case pu.Host == "" || pu.Hostname() == "":
		return fmt.Sprintf("missing host in %q", u)
	case pu.User != nil:
		return fmt.Sprintf("must not carry credentials, got %q", pu.Redacted())
	}
	return ""
}

// validHeaderName reports whether s is an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

func required(es *Errors, path, v string) {
	if v == "" {
		es.add(path, "required")
	}
}

func oneOf(es *Errors, path, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	q := make([]string, len(allowed))
	for i, a := range allowed {
		q[i] = fmt.Sprintf("%q", a)
	}
	list := strings.Join(q[:len(q)-1], ", ") + " or " + q[len(q)-1]
	es.add(path, fmt.Sprintf("must be %s, got %q", list, v))
}

func positive(es *Errors, path string, v int) {
	if v <= 0 {
		es.add(path, fmt.Sprintf("must be positive, got %d", v))
	}
}

func notNegative[T int | time.Duration](es *Errors, path string, v T) {
	if v < 0 {
		es.add(path, "must not be negative")
	}
}
