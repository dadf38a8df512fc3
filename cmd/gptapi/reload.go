package main

import (
	"log/slog"
	"strings"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
	"github.com/gptapi/gptapi/proxy"
)

// reloader applies a reloaded config (SPEC §2): the proxy's snapshot, the
// log level and the record settings the sink takes live; every other
// changed key is logged by its path as waiting for a restart, so nothing
// is ignored silently. started is the config the process started with:
// what the restart-only keys still are.
type reloader struct {
	srv     *proxy.Server
	sink    *logsink.Sink
	level   *slog.LevelVar
	log     *slog.Logger
	started *configs.Config
}

func (r *reloader) apply(next *configs.Config) error {
	if err := r.srv.Apply(next); err != nil {
		return err
	}
	r.sink.SetStoreBodies(next.Logsink.StoreBodies)
	r.sink.SetMaxBodyLogBytes(next.Logsink.MaxBodyLogBytes)
	keys := append(proxy.RestartKeys(r.started, next), restartKeys(r.started, next)...)
	if len(keys) > 0 {
		// At the level in force until now, so a reload that raises the
		// level still says what it could not apply. server.listen is
		// reported by the watcher itself.
		r.log.Warn("config reloaded, but these changes wait for a restart", "keys", strings.Join(keys, ", "))
	}
	r.level.Set(parseLevel(next.Log.Level))
	return nil
}

// restartKeys returns the key paths under log and logsink that differ
// between a and b and that only a restart applies.
func restartKeys(a, b *configs.Config) []string {
	var keys []string
	f := func(changed bool, key string) {
		if changed {
			keys = append(keys, key)
		}
	}
	f(a.Log.Format != b.Log.Format, "log.format")
	f(a.Log.File != b.Log.File, "log.file")
	x, y := &a.Logsink, &b.Logsink
	f(x.Path != y.Path, "logsink.path")
	f(x.Driver != y.Driver, "logsink.driver")
	f(x.DSN != y.DSN, "logsink.dsn")
	f(x.Node != y.Node, "logsink.node")
	f(x.SpillDir != y.SpillDir, "logsink.spill_dir")
	f(x.QueueSize != y.QueueSize, "logsink.queue_size")
	f(x.BatchSize != y.BatchSize, "logsink.batch_size")
	f(x.FlushInterval != y.FlushInterval, "logsink.flush_interval")
	f(x.MaxPendingBytes != y.MaxPendingBytes, "logsink.max_pending_bytes")
	return keys
}

// parseLevel reads log.level; validation already refused anything else,
// so an unknown value is info.
func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}
