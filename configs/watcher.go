package configs

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long the file must stay quiet after a change before it is
// reloaded: editors write, rename and chmod in bursts. A file that never
// stays quiet that long (a tool rewriting it in a loop) is reloaded anyway
// maxDelay after the first change not yet reloaded, so that every change
// is in force within a second (SPEC §2).
const (
	debounce = 200 * time.Millisecond
	maxDelay = 700 * time.Millisecond
)

// Watcher reloads a configuration file when it changes and on Reload (the
// caller wires SIGHUP to it). Set the exported fields, then call Start.
//
// It watches the file's directory rather than the file, so the watch survives
// an editor replacing the file (write a temporary file and rename it over, or
// remove and create). Reloads are serialized: Apply never runs twice at once.
// A file found empty is refused: it is a save caught half-way far more often
// than a wish to drop every client.
type Watcher struct {
	// Path is the configuration file.
	Path string
	// Apply is called with each valid new config; an error keeps the old
	// one. The config must not be modified: it is the new snapshot.
	Apply func(*Config) error
	// Result, if set, is called after each reload attempt, e.g. to count
	// reloads by result.
	Result func(ok bool)
	// Logger receives what happens. By default slog.Default().
	Logger *slog.Logger

	mu   sync.Mutex // serializes reloads; guards cur and last
	cur  *Config    // the config in effect, for spotting a listen change
	last []byte     // the file content cur came from

	fw     *fsnotify.Watcher
	done   chan struct{}
	closed bool
	wg     sync.WaitGroup
}

var (
	errStarted = errors.New("configs: watcher already started")
	errClosed  = errors.New("configs: watcher closed")
)

// Start begins watching Path and returns once the watch is set up. The file
// as it is now is taken as the config in effect (the caller has loaded and
// applied it); Start does not call Apply.
func (w *Watcher) Start() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return errClosed
	}
	if w.fw != nil {
		return errStarted
	}
	dir := filepath.Dir(w.Path)
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("cannot watch %s: %w", w.Path, err)
	}
	if err := fw.Add(dir); err != nil {
		fw.Close()
		return fmt.Errorf("cannot watch %s: %w", dir, err)
	}
	if w.cur == nil {
		if b, err := os.ReadFile(w.Path); err == nil {
			if cfg, err := Load(w.Path); err == nil {
				w.cur, w.last = cfg, b
			}
		}
	}
	// A symlinked file (a Kubernetes ConfigMap) changes by swapping links
	// beside it, under other names; then every event of the directory counts
	// and unchanged content is what filters them.
	fi, err := os.Lstat(w.Path)
	anyName := err == nil && fi.Mode()&os.ModeSymlink != 0

	w.fw = fw
	w.done = make(chan struct{})
	w.wg.Add(1)
	go w.loop(filepath.Base(w.Path), anyName)
	return nil
}

func (w *Watcher) loop(base string, anyName bool) {
	defer w.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	var due time.Time // the latest a reload may come; zero: nothing pending
	for {
		select {
		case ev, ok := <-w.fw.Events:
			if !ok {
				return
			}
			if ev.Op == fsnotify.Chmod || !anyName && filepath.Base(ev.Name) != base {
				continue
			}
			now := time.Now()
			if due.IsZero() {
				due = now.Add(maxDelay)
			}
			t.Reset(min(debounce, due.Sub(now)))
		case err, ok := <-w.fw.Errors:
			if !ok {
				return
			}
			w.logger().Warn("config watch error", "file", w.Path, "error", err)
		case <-t.C:
			due = time.Time{}
			w.reload(false)
		case <-w.done:
			return
		}
	}
}

// Reload loads the file now and applies it if valid, even when its content
// did not change. It returns the validation error (Errors) or Apply's error
// when the new config was refused.
func (w *Watcher) Reload() error {
	return w.reload(true)
}

func (w *Watcher) reload(force bool) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	log := w.logger()

	// Read before Load: if the file changes in between, the content kept
	// is the older one and the next event reloads again.
	b, readErr := os.ReadFile(w.Path)
	if !force && readErr == nil && w.cur != nil && bytes.Equal(b, w.last) {
		log.Debug("config file unchanged", "file", w.Path)
		return nil
	}
	if readErr == nil && len(bytes.TrimSpace(b)) == 0 {
		// Most likely a save caught between truncating and writing; an
		// empty file would otherwise be a valid config without clients.
		err := &FieldError{Path: w.Path, Msg: "file is empty; keeping the running config"}
		log.Error("config reload refused", "file", w.Path, "error", err.Error())
		w.result(false)
		return Errors{err}
	}
	cfg, err := Load(w.Path)
	if err != nil {
		var es Errors
		if errors.As(err, &es) {
			for _, fe := range es {
				log.Error("config reload refused", "file", w.Path, "error", fe.Error())
			}
		} else {
			log.Error("config reload refused", "file", w.Path, "error", err)
		}
		w.result(false)
		return err
	}
	if w.cur != nil && cfg.Server.Listen != w.cur.Server.Listen {
		log.Warn("server.listen changed; it takes effect after a restart",
			"file", w.Path, "listening", w.cur.Server.Listen, "configured", cfg.Server.Listen)
	}
	if len(cfg.Clients) == 0 {
		log.Warn("config has no openai_clients; every model will get 404", "file", w.Path)
	}
	if w.Apply != nil {
		if err := w.Apply(cfg); err != nil {
			log.Error("config reload refused", "file", w.Path, "error", err)
			w.result(false)
			return err
		}
	}
	w.cur = cfg
	if readErr == nil {
		w.last = b
	}
	log.Info("config reloaded", "file", w.Path, "clients", len(cfg.Clients))
	w.result(true)
	return nil
}

func (w *Watcher) result(ok bool) {
	if w.Result != nil {
		w.Result(ok)
	}
}

func (w *Watcher) logger() *slog.Logger {
	if w.Logger != nil {
		return w.Logger
	}
	return slog.Default()
}

// Close stops watching and waits for a reload in progress to finish. It is
// safe to call more than once, and before Start (which then fails).
func (w *Watcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	fw, done := w.fw, w.done
	w.mu.Unlock()
	if fw == nil {
		return nil
	}
	close(done)
	err := fw.Close()
	w.wg.Wait()
	return err
}
