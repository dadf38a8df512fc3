// Command gptapi is the OpenAI-compatible edge proxy: see README.md and the
// config reference in configs/config.yaml.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	_ "net/http/pprof" // served only with -pprof
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"github.com/gptapi/gptapi/configs"
	"github.com/gptapi/gptapi/logsink"
	"github.com/gptapi/gptapi/proxy"
)

// Stamped by the build: -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

const (
	exitOK     = 0
	exitConfig = 1
	exitListen = 2
)

func main() { os.Exit(run()) }

func run() int {
	def := os.Getenv("GPTAPI_CONFIG")
	if def == "" {
		def = "configs/config.yaml"
	}
	path := flag.String("config", def, "config file")
	check := flag.Bool("check", false, "validate the config file, print every problem, exit 0 or 1")
	showVersion := flag.Bool("version", false, "print version and build facts")
	pprofAddr := flag.String("pprof", "", "serve net/http/pprof on this address (e.g. 127.0.0.1:6060) for profiling; off by default")
	flag.CommandLine.SetOutput(os.Stderr)
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %v\n", flag.Args())
		return exitConfig
	}

	if *showVersion {
		printVersion(os.Stdout)
		return exitOK
	}

	cfg, err := configs.Load(*path)
	if err != nil {
		printConfigError(os.Stderr, *path, err)
		return exitConfig
	}
	if *check {
		if len(cfg.Auth.Keys) > 0 {
			// SPEC §3: with auth.keys the caller's key is gptapi's own.
			for i, c := range cfg.Clients {
				if c.KeyMode == configs.KeyModePassthrough || c.APIKey == "" {
					fmt.Printf("warning: openai_clients[%d] (%s): auth.keys is set, so callers' keys are never sent upstream; this client sends no Authorization\n", i, c.Name)
				}
			}
		}
		fmt.Printf("%s: ok (%d clients)\n", *path, len(cfg.Clients))
		return exitOK
	}

	level := new(slog.LevelVar)
	log, logFile, err := newLogger(&cfg.Log, level)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitConfig
	}
	if logFile != nil {
		defer logFile.Close()
	}
	slog.SetDefault(log)
	if *pprofAddr != "" {
		go func() {
			log.Info("pprof serving", "addr", *pprofAddr)
			if err := http.ListenAndServe(*pprofAddr, nil); err != nil {
				log.Error("pprof", "err", err)
			}
		}()
	}
	return serve(*path, cfg, log, level)
}

func serve(path string, cfg *configs.Config, log *slog.Logger, level *slog.LevelVar) int {
	sink, err := logsink.Open(logsink.Options{
		Path:            cfg.Logsink.Path,
		QueueSize:       cfg.Logsink.QueueSize,
		BatchSize:       cfg.Logsink.BatchSize,
		FlushInterval:   cfg.Logsink.FlushInterval,
		StoreBodies:     cfg.Logsink.StoreBodies,
		MaxBodyLogBytes: cfg.Logsink.MaxBodyLogBytes,
		SpillDir:        cfg.Logsink.SpillDir,
		Node:            cfg.Logsink.Node,
		Driver:          cfg.Logsink.Driver,
		DSN:             cfg.Logsink.DSN,
		MaxPendingBytes: int64(cfg.Logsink.MaxPendingBytes),
		Logger:          log,
	})
	if err != nil {
		log.Error("cannot open the record database", "path", cfg.Logsink.Path, "err", err)
		return exitListen
	}
	defer sink.Close()

	srv, err := proxy.New(cfg, sink, log)
	if err != nil {
		log.Error("cannot start", "err", err)
		return exitConfig
	}
	sink.OnCachedTokens(srv.CountCachedTokens) // gptapi_prompt_cached_tokens_total
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		log.Error("cannot listen", "addr", cfg.Server.Listen, "err", err)
		return exitListen
	}

	r := &reloader{srv: srv, sink: sink, level: level, log: log, started: cfg}
	w := &configs.Watcher{Path: path, Apply: r.apply, Result: srv.CountReload, Logger: log}
	if err := w.Start(); err != nil {
		log.Warn("config file is not watched; SIGHUP still reloads", "err", err)
	}
	defer w.Close()

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	log.Info("gptapi serving", "addr", ln.Addr().String(), "clients", len(cfg.Clients), "version", version)

	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	for {
		select {
		case err := <-serveErr:
			log.Error("server stopped", "err", err)
			return exitListen
		case s := <-sig:
			if s == syscall.SIGHUP {
				if err := w.Reload(); err != nil {
					log.Error("reload refused", "err", err)
				}
				continue
			}
			return shutdown(srv, sink, sig, log)
		}
	}
}

// shutdown drains the server for server.shutdown_timeout, cuts what still
// runs, then writes every record (SPEC §1). A second SIGTERM/SIGINT stops
// the waiting: open streams are cut at once and the records go to the
// database or, without waiting for it, to the spill folder; the exit is
// still clean.
func shutdown(srv *proxy.Server, sink *logsink.Sink, sig chan os.Signal, log *slog.Logger) int {
	timeout := srv.Config().Server.ShutdownTimeout
	log.Info("shutting down", "timeout", timeout.String(), "open_streams", srv.ActiveStreams())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case s := <-sig:
				if s == syscall.SIGHUP {
					continue
				}
				log.Warn("second signal: cutting open streams, writing every record now")
				cancel()
				sink.Hurry()
				return
			case <-stop:
				return
			}
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		log.Error("shutdown", "err", err)
	}
	err := sink.Close()
	lost := sink.Dropped()
	if lost > 0 {
		log.Error("stopped; records lost: the database and the spill folder both refused them", "records", lost, "err", err)
		return exitListen
	}
	if err != nil {
		// Not written to the database, but to the spill folder: the next
		// start writes them.
		log.Warn("records kept in the spill folder for the next start", "err", err)
	}
	if n := srv.Unfinished(); n > 0 {
		log.Error("stopped; records of requests still running were lost", "records", n)
		return exitOK
	}
	log.Info("stopped; every record written")
	return exitOK
}

// newLogger builds the logger of c; level holds its level, which a reload
// changes live.
func newLogger(c *configs.Log, level *slog.LevelVar) (*slog.Logger, *os.File, error) {
	var out io.Writer = os.Stderr
	var f *os.File
	if c.File != "" {
		var err error
		f, err = os.OpenFile(c.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("cannot open log.file %s: %w", c.File, err)
		}
		out = io.MultiWriter(os.Stderr, f)
	}
	level.Set(parseLevel(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts)), f, nil
	}
	return slog.New(slog.NewTextHandler(out, opts)), f, nil
}

func printConfigError(w io.Writer, path string, err error) {
	var errs configs.Errors
	if errors.As(err, &errs) {
		fmt.Fprintf(w, "%s: %d problem(s):\n", path, len(errs))
		for _, e := range errs {
			fmt.Fprintf(w, "  %s\n", e.Error())
		}
		return
	}
	fmt.Fprintf(w, "%s: %v\n", path, err)
}

func printVersion(w io.Writer) {
	level := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "GO"+runtimeArchUpper() {
				level = s.Value
			}
		}
	}
	if level == "" {
		level = defaultLevel()
	}
	fmt.Fprintf(w, "gptapi %s (commit %s)\n", version, commit)
	fmt.Fprintf(w, "go: %s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(w, "level: GO%s=%s\n", runtimeArchUpper(), level)
	fmt.Fprintf(w, "json parser: %s\n", logsink.ParserName())
}

func runtimeArchUpper() string {
	switch runtime.GOARCH {
	case "amd64":
		return "AMD64"
	case "arm64":
		return "ARM64"
	}
	return runtime.GOARCH
}

// defaultLevel is what the toolchain assumes when the build did not set one.
func defaultLevel() string {
	switch runtime.GOARCH {
	case "amd64":
		return "v1"
	case "arm64":
		return "v8.0"
	}
	return "default"
}
