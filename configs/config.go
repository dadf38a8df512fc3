package configs

import (
	"net/netip"
	"time"
)

// Config is one loaded configuration file. Load returns it complete and
// validated; treat it as read-only, since requests in flight may still hold it.
type Config struct {
	Server     Server     `koanf:"server"`
	Auth       Auth       `koanf:"auth"`
	Log        Log        `koanf:"log"`
	Logsink    Logsink    `koanf:"logsink"`
	Preprocess Preprocess `koanf:"preprocess"`
	Check      Check      `koanf:"check_config"`
	Clients    []Client   `koanf:"openai_clients"`
	Routing    Routing    `koanf:"routing"`
}

// Server is the listening side (key server).
type Server struct {
	// Listen is the host:port to serve on. By default ":8080". A change
	// needs a restart: a reload keeps the running listener.
	Listen string `koanf:"listen"`
	// MaxBodyBytes caps request bodies; larger ones get 413. By default 16 MiB.
	MaxBodyBytes int `koanf:"max_body_bytes"`
	// ReadTimeout bounds reading a caller's request. By default 60s.
	ReadTimeout time.Duration `koanf:"read_timeout"`
	// SendTimeout is how long a caller may take no bytes of its answer
	// before it counts as gone (499). By default 60s; 0 means no bound.
	SendTimeout time.Duration `koanf:"send_timeout"`
	// IdleTimeout bounds an idle keep-alive connection. By default 120s.
	IdleTimeout time.Duration `koanf:"idle_timeout"`
	// ShutdownTimeout is how long in-flight requests and streams may run
	// after SIGTERM. By default 30s.
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout"`
	// TrustedProxies are the CIDRs (a bare IP means /32 or /128) whose
	// X-Forwarded-For is believed for client_ip. By default none.
	TrustedProxies []string `koanf:"trusted_proxies"`
	// TrustedNets is TrustedProxies parsed and masked by Load; it has no key
	// of its own.
	TrustedNets []netip.Prefix `koanf:"-"`
}

// Auth guards /v1/* and /rerank (key auth).
type Auth struct {
	// Keys, when any is set, are the bearer keys callers must present;
	// otherwise 401. By default none: the gateway is open.
	Keys []string `koanf:"keys"`
}

// Log is the process log (key log).
type Log struct {
	// Level is debug, info, warn or error. By default info.
	Level string `koanf:"level"`
	// Format is text or json. By default text.
	Format string `koanf:"format"`
	// File, if set, also receives every log line (appended).
	File string `koanf:"file"`
}

// Logsink is the SQLite request log (key logsink).
type Logsink struct {
	// Path is the SQLite file; its folder is created. By default data/gptapi.db.
	Path string `koanf:"path"`
	// QueueSize is how many records may wait in memory for the writer before
	// they spill to SpillDir. By default 65536.
	QueueSize int `koanf:"queue_size"`
	// BatchSize is the records per transaction. By default 512.
	BatchSize int `koanf:"batch_size"`
	// FlushInterval is the longest a record waits in memory. By default 200ms.
	FlushInterval time.Duration `koanf:"flush_interval"`
	// StoreBodies keeps request and response bodies. By default true.
	StoreBodies bool `koanf:"store_bodies"`
	// MaxBodyLogBytes cuts longer bodies (marked truncated). By default 1 MiB.
	MaxBodyLogBytes int `koanf:"max_body_log_bytes"`
	// SpillDir receives records when the queue is full; they are replayed
	// later. By default data/spill.
	SpillDir string `koanf:"spill_dir"`
	// MaxPendingBytes bounds the records held in memory while the database
	// and the spill folder both refuse writes; past it records are dropped
	// and counted. By default 256 MiB.
	MaxPendingBytes int `koanf:"max_pending_bytes"`
	// Driver is DriverSQLite (the default) or DriverPostgres.
	Driver string `koanf:"driver"`
	// DSN is the PostgreSQL connection string (driver postgres only).
	DSN string `koanf:"dsn"`
	// Node is this gateway's name in the node column. By default the host
	// name.
	Node string `koanf:"node"`
}

// Record store drivers of Logsink.Driver.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Preprocess switches the chat message clean-up steps (key preprocess).
type Preprocess struct {
	// Strip trims whitespace of every text content. By default true.
	Strip bool `koanf:"strip"`
	// StripThink removes <think>…</think> blocks and <tool_call> tags from
	// assistant history. By default true.
	StripThink bool `koanf:"strip_think"`
	// DropEmpty drops messages left with no content and no tool_calls.
	// By default true.
	DropEmpty bool `koanf:"drop_empty"`
	// MergeUser handles consecutive user messages: merge (join with "\n\n"),
	// last (keep the last) or off. By default merge.
	MergeUser string `koanf:"merge_user"`
}

// Check holds the upstream timeouts and the failover knobs (key check_config).
type Check struct {
	// ConnectTimeout bounds dialing an upstream. By default 5s.
	ConnectTimeout time.Duration `koanf:"connect_timeout"`
	// FirstByteTimeout bounds the wait for upstream response headers (and
	// the first SSE byte of a stream). By default 60s.
	FirstByteTimeout time.Duration `koanf:"first_byte_timeout"`
	// StreamIdleTimeout is the longest silence inside a stream. By default 60s.
	StreamIdleTimeout time.Duration `koanf:"stream_idle_timeout"`
	// RequestTimeout bounds a whole non-streaming exchange. By default 600s.
	RequestTimeout time.Duration `koanf:"request_timeout"`
	// MaxResponseBytes bounds a non-stream answer; a larger one is a failure
	// ("answer too large"), never buffered whole. By default 64 MiB.
	MaxResponseBytes int `koanf:"max_response_bytes"`
	// MaxConnWait is how long a request waits for a pooled connection when
	// the client's max_conns are all busy. Giving up is not a health
	// failure. By default 1s.
	MaxConnWait time.Duration `koanf:"max_conn_wait"`
	// FailureThreshold is the consecutive failures that put an upstream in
	// cooldown. By default 3; at least 1.
	FailureThreshold int `koanf:"failure_threshold"`
	// Cooldown is how long a failing upstream goes last. By default 30s.
	Cooldown time.Duration `koanf:"cooldown"`
	// MaxFallbackDepth is the fallback hops after the requested model.
	// By default 3; 0 disables fallbacks.
	MaxFallbackDepth int `koanf:"max_fallback_depth"`
	// ModelsTimeout bounds each upstream's /models call. By default 5s.
	ModelsTimeout time.Duration `koanf:"models_timeout"`
	// ModelsCacheTTL is how long the merged /v1/models answer is reused.
	// By default 30s.
	ModelsCacheTTL time.Duration `koanf:"models_cache_ttl"`
}

// Merge modes of Preprocess.MergeUser.
const (
	MergeUserMerge = "merge"
	MergeUserLast  = "last"
	MergeUserOff   = "off"
)

// Key modes of Client.KeyMode.
const (
	// KeyModeConfig sends the client's APIKey, or the caller's key when
	// APIKey is empty.
	KeyModeConfig = "config"
	// KeyModePassthrough always sends the caller's key.
	KeyModePassthrough = "passthrough"
)

// Match types of Match.Type.
const (
	// MatchExact is a case-sensitive equality with one of the values.
	MatchExact = "exact"
	// MatchKeyword is a case-insensitive substring test against the values.
	MatchKeyword = "keyword"
)

// Client is one upstream (an item of openai_clients).
type Client struct {
	// Name is required and unique; it appears in logs, the
	// X-Gptapi-Upstream header and Tried lists.
	Name string `koanf:"name"`
	// BaseURL is required: an http or https URL without query or fragment,
	// with any trailing slash removed by Load. Paths such as
	// /chat/completions are appended to it.
	BaseURL string `koanf:"base_url"`
	// APIKey is sent upstream as a bearer key (see KeyMode). Optional.
	APIKey string `koanf:"api_key"`
	// KeyMode is KeyModeConfig (the default) or KeyModePassthrough.
	KeyMode string `koanf:"key_mode"`
	// Match decides which requested models this client serves. Required.
	Match Match `koanf:"model_match"`
	// Model, if set, is the model name sent upstream instead of the
	// requested one.
	Model string `koanf:"model"`
	// Priority is the weight for weighted-random order. By default 1;
	// 0 makes the client a standby, tried after every weighted one.
	Priority int `koanf:"priority"`
	// MaxTokens clamps max_tokens / max_completion_tokens. 0 means no clamp.
	MaxTokens int `koanf:"max_tokens"`
	// Stop is merged into the request's stop. A string or a list in YAML.
	Stop []string `koanf:"stop"`
	// SpecialPrefix is prepended to the answer text.
	SpecialPrefix string `koanf:"special_prefix"`
	// Fallback is the model to route to after every client for the
	// requested model failed. It need not match any client.
	Fallback string `koanf:"fallback"`
	// StreamUsage asks the upstream for usage in streams. By default true.
	StreamUsage bool `koanf:"stream_usage"`
	// Headers are extra headers sent upstream.
	Headers map[string]string `koanf:"headers"`
	// MaxConns is the connection pool size to this upstream. By default
	// (absent or 0) 1024.
	MaxConns int `koanf:"max_conns"`
	// MetricsURL is the upstream's Prometheus /metrics (vLLM, SGLang), read
	// every routing.poll_interval for its queue. Optional.
	MetricsURL string `koanf:"metrics_url"`
}

// Routing strategies of Routing.Strategy (SPEC §4.7).
const (
	StrategyWeighted    = "weighted"
	StrategyLeastLoaded = "least_loaded"
	StrategyPrefix      = "prefix"
)

// Routing orders the weighted candidates of a request (key routing).
type Routing struct {
	// Strategy is StrategyWeighted (the default), StrategyLeastLoaded or
	// StrategyPrefix.
	Strategy string `koanf:"strategy"`
	// PollInterval is how often each client's metrics_url is read. A
	// reading older than three intervals is ignored. By default 1s.
	PollInterval time.Duration `koanf:"poll_interval"`
	// BlockBytes is the size of the blocks the prefix strategy cuts a
	// prompt into; a match counts whole blocks. By default 1024.
	BlockBytes int `koanf:"block_bytes"`
	// KeyBytes bounds the placement key: the system prompt and up to this
	// much of the first user message (chat), or the prompt's first
	// KeyBytes bytes. By default 2048.
	KeyBytes int `koanf:"key_bytes"`
	// IndexBytes is the memory of the prefix index, 16 bytes per block
	// remembered; the oldest are forgotten past it. By default 32 MiB.
	IndexBytes int `koanf:"index_bytes"`
	// BalanceAbs and BalanceRel say when the upstream holding a prompt is
	// overloaded: its load (requests in flight plus queue, over priority)
	// exceeds the least loaded candidate's by more than BalanceAbs and is
	// more than BalanceRel times it; the least loaded then goes first.
	// By default 4 and 1.25.
	BalanceAbs float64 `koanf:"balance_abs"`
	BalanceRel float64 `koanf:"balance_rel"`
}

// Routing defaults of the prefix strategy.
const (
	DefaultBlockBytes = 1024
	DefaultKeyBytes   = 2048
	DefaultIndexBytes = 32 << 20
	DefaultBalanceAbs = 4
	DefaultBalanceRel = 1.25
)

// Match is a client's model_match.
type Match struct {
	// Type is MatchExact or MatchKeyword.
	Type string `koanf:"type"`
	// Value is never empty after Load; any one matching is enough. A string
	// or a list in YAML.
	Value []string `koanf:"value"`
}

// Defaults of a client's keys that are not zero.
const (
	DefaultPriority = 1
	DefaultMaxConns = 1024
)

// Default returns a Config with every default of the configuration file and
// no clients: what Load returns for an empty file.
func Default() *Config {
	return &Config{
		Server: Server{
			Listen:          ":8080",
			MaxBodyBytes:    16 << 20,
			ReadTimeout:     60 * time.Second,
			IdleTimeout:     120 * time.Second,
			ShutdownTimeout: 30 * time.Second,
			SendTimeout:     60 * time.Second,
		},
		Log: Log{Level: "info", Format: "text"},
		Logsink: Logsink{
			Path:            "data/gptapi.db",
			QueueSize:       65536,
			BatchSize:       512,
			FlushInterval:   200 * time.Millisecond,
			StoreBodies:     true,
			MaxBodyLogBytes: 1 << 20,
			SpillDir:        "data/spill",
			MaxPendingBytes: 256 << 20,
			Driver:          DriverSQLite,
		},
		Preprocess: Preprocess{Strip: true, StripThink: true, DropEmpty: true, MergeUser: MergeUserMerge},
		Check: Check{
			ConnectTimeout:    5 * time.Second,
			FirstByteTimeout:  60 * time.Second,
			StreamIdleTimeout: 60 * time.Second,
			RequestTimeout:    600 * time.Second,
			FailureThreshold:  3,
			Cooldown:          30 * time.Second,
			MaxFallbackDepth:  3,
			ModelsTimeout:     5 * time.Second,
			ModelsCacheTTL:    30 * time.Second,
			MaxResponseBytes:  64 << 20,
			MaxConnWait:       time.Second,
		},
		Routing: Routing{Strategy: StrategyWeighted, PollInterval: time.Second, BlockBytes: DefaultBlockBytes,
			KeyBytes: DefaultKeyBytes, IndexBytes: DefaultIndexBytes, BalanceAbs: DefaultBalanceAbs, BalanceRel: DefaultBalanceRel},
	}
}
