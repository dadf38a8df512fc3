package configs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gptapi/gptapi/internal/testlog"
)

// waitFor bounds every wait for a reload: the contract is one second.
const waitFor = 3 * time.Second

func clientsYAML(listen string, names ...string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "server: {listen: %q}\nopenai_clients:\n", listen)
	for i, n := range names {
		fmt.Fprintf(&sb, "  - {name: %s, base_url: \"http://127.0.0.1:%d/v1\", model_match: {type: keyword, value: qwen}}\n", n, 9001+i)
	}
	return sb.String()
}

type watched struct {
	path    string
	w       *Watcher
	applied chan *Config
	results chan bool
	log     *testlog.Buffer
}

// newWatched writes text, starts a watcher on it and stops it at cleanup.
func newWatched(t *testing.T, text string, start bool) *watched {
	t.Helper()
	x := &watched{
		path:    writeConfig(t, text),
		applied: make(chan *Config, 16),
		results: make(chan bool, 16),
		log:     &testlog.Buffer{},
	}
	x.w = &Watcher{
		Path:   x.path,
		Apply:  func(c *Config) error { x.applied <- c; return nil },
		Result: func(ok bool) { x.results <- ok },
		Logger: slog.New(slog.NewTextHandler(x.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if start {
		if err := x.w.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { x.w.Close() })
	return x
}

func (x *watched) write(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(x.path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// nextApplied waits for the next reload and returns the config it applied.
// Result comes after Apply, so once it arrives the config must be there.
func (x *watched) nextApplied(t *testing.T) *Config {
	t.Helper()
	if ok := x.nextResult(t); !ok {
		t.Fatalf("Result(false); log:\n%s", x.log)
	}
	select {
	case c := <-x.applied:
		return c
	default:
		t.Fatal("Result(true) without Apply")
	}
	return nil
}

func (x *watched) nextResult(t *testing.T) bool {
	t.Helper()
	select {
	case ok := <-x.results:
		return ok
	case <-time.After(waitFor):
		t.Fatalf("no reload result within %v; log:\n%s", waitFor, x.log)
	}
	return false
}

func names(c *Config) string {
	var s []string
	for _, cl := range c.Clients {
		s = append(s, cl.Name)
	}
	return strings.Join(s, ",")
}

func TestWatcherSwapsValidConfig(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	start := time.Now()
	x.write(t, clientsYAML(":8080", "a", "b"))
	c := x.nextApplied(t)
	if got := names(c); got != "a,b" {
		t.Errorf("applied clients %q, want a,b", got)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("reload took %v, want within a second", d)
	}
	if !strings.Contains(x.log.String(), "config reloaded") {
		t.Errorf("log lacks the reload:\n%s", x.log)
	}
}

// A file that keeps changing faster than the debounce (a tool rewriting it
// in a loop) is still reloaded within a second of its first change: the
// debounce waits for quiet, but never past maxDelay.
func TestWatcherReloadsFileThatKeepsChanging(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	stop := make(chan struct{})
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if err := os.WriteFile(x.path, []byte(clientsYAML(":8080", "a", fmt.Sprintf("b%d", i))), 0o644); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); <-done }()
	select {
	case <-x.applied:
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Errorf("first reload %v after the first change, want within a second", d)
		}
	case <-time.After(waitFor):
		t.Fatalf("no reload in %v while the file kept changing every 50 ms; log:\n%s", waitFor, x.log)
	}
}

func TestWatcherRefusesInvalidConfig(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	x.write(t, clientsYAML(":8080", "a")+"  - {name: b, base_url: \"http://h/v1\", model_match: {type: regex, value: x}}\n")
	if x.nextResult(t) {
		t.Fatal("Result(true) for an invalid file")
	}
	select {
	case c := <-x.applied:
		t.Fatalf("Apply called with %q for an invalid file", names(c))
	default:
	}
	log := x.log.String()
	if !strings.Contains(log, "level=ERROR") || !strings.Contains(log, `openai_clients[1].model_match.type: must be \"exact\" or \"keyword\", got \"regex\"`) {
		t.Errorf("log lacks the error with its key path:\n%s", log)
	}

	// An empty file is a save in progress, not a config without clients.
	x.write(t, "")
	if x.nextResult(t) {
		t.Fatal("Result(true) for an empty file")
	}
	if len(x.applied) != 0 {
		t.Fatal("Apply called for an empty file")
	}

	// Fixing the file applies it.
	x.write(t, clientsYAML(":8080", "a", "c"))
	if got := names(x.nextApplied(t)); got != "a,c" {
		t.Errorf("applied clients %q, want a,c", got)
	}
}

func TestWatcherRenameOver(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	for i, want := range []string{"a,b", "a,b,c"} {
		tmp := filepath.Join(filepath.Dir(x.path), fmt.Sprintf(".config.yaml.tmp%d", i))
		if err := os.WriteFile(tmp, []byte(clientsYAML(":8080", strings.Split(want, ",")...)), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, x.path); err != nil {
			t.Fatal(err)
		}
		// The second save proves the watch survived the first replacement.
		if got := names(x.nextApplied(t)); got != want {
			t.Errorf("save %d: applied clients %q, want %q", i, got, want)
		}
	}
}

func TestWatcherRemoveAndCreate(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	for _, want := range []string{"a,b", "a,b,c"} {
		if err := os.Remove(x.path); err != nil {
			t.Fatal(err)
		}
		x.write(t, clientsYAML(":8080", strings.Split(want, ",")...))
		if got := names(x.nextApplied(t)); got != want {
			t.Errorf("applied clients %q, want %q", got, want)
		}
	}
}

func TestWatcherSkipsUnchangedContent(t *testing.T) {
	text := clientsYAML(":8080", "a")
	x := newWatched(t, text, true)
	x.write(t, text) // same bytes: no reload
	time.Sleep(2 * debounce)
	x.write(t, clientsYAML(":8080", "a", "b"))
	if got := names(x.nextApplied(t)); got != "a,b" {
		t.Errorf("first applied config has clients %q, want a,b (the unchanged write must not reload)", got)
	}
}

func TestWatcherReload(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), false)
	// Reload applies even an unchanged file: SIGHUP is an explicit request.
	for range 2 {
		if err := x.w.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := names(x.nextApplied(t)); got != "a" {
			t.Errorf("applied clients %q, want a", got)
		}
	}

	x.write(t, "log: {level: loud}\n")
	err := x.w.Reload()
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 || es[0].Path != "log.level" {
		t.Fatalf("Reload of an invalid file = %v, want the log.level problem", err)
	}
	if x.nextResult(t) {
		t.Error("Result(true) for an invalid file")
	}
	if len(x.applied) != 0 {
		t.Error("Apply called for an invalid file")
	}
}

func TestWatcherApplyError(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), false)
	x.w.Apply = func(*Config) error { return errors.New("cannot build client pools") }
	if err := x.w.Reload(); err == nil || err.Error() != "cannot build client pools" {
		t.Fatalf("Reload = %v, want Apply's error", err)
	}
	if x.nextResult(t) {
		t.Error("Result(true) after Apply failed")
	}
	if !strings.Contains(x.log.String(), "cannot build client pools") {
		t.Errorf("log lacks Apply's error:\n%s", x.log)
	}
}

func TestWatcherListenChangeNeedsRestart(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	x.write(t, clientsYAML(":9090", "a"))
	c := x.nextApplied(t)
	if c.Server.Listen != ":9090" {
		t.Errorf("applied listen %q, want the new one", c.Server.Listen)
	}
	log := x.log.String()
	if !strings.Contains(log, "level=WARN") || !strings.Contains(log, "restart") {
		t.Errorf("log lacks the restart warning:\n%s", log)
	}

	x.write(t, clientsYAML(":9090", "a", "b"))
	x.nextApplied(t)
	if n := strings.Count(x.log.String(), "restart"); n != 1 {
		t.Errorf("restart warning logged %d times, want once (listen did not change again)", n)
	}
}

// Reload and file events may race; the race detector and the serialized
// Apply (which fails the test if entered twice at once) check it.
func TestWatcherConcurrentReloads(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), false)
	var inApply sync.Mutex
	x.w.Apply = func(c *Config) error {
		if !inApply.TryLock() {
			t.Error("Apply entered concurrently")
			return nil
		}
		time.Sleep(time.Millisecond)
		inApply.Unlock()
		return nil
	}
	x.w.Result = nil
	if err := x.w.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 5 {
				if i == 0 {
					// Saved atomically: a Reload racing a plain write could
					// read it half-written, which is refused.
					tmp := x.path + ".tmp"
					if err := os.WriteFile(tmp, []byte(clientsYAML(":8080", "a", fmt.Sprintf("b%d", j))), 0o644); err != nil {
						t.Error(err)
					}
					if err := os.Rename(tmp, x.path); err != nil {
						t.Error(err)
					}
				}
				if err := x.w.Reload(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
}

func TestWatcherLifecycle(t *testing.T) {
	x := newWatched(t, clientsYAML(":8080", "a"), true)
	if err := x.w.Start(); err == nil {
		t.Error("second Start succeeded")
	}
	if err := x.w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := x.w.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	// Closed: changes are no longer watched.
	x.write(t, clientsYAML(":8080", "a", "b"))
	select {
	case ok := <-x.results:
		t.Errorf("Result(%v) after Close", ok)
	case <-time.After(3 * debounce):
	}

	var w Watcher
	if err := w.Close(); err != nil {
		t.Errorf("Close before Start = %v", err)
	}
	w.Path = x.path
	if err := w.Start(); err == nil {
		t.Error("Start after Close succeeded")
	}
	if err := (&Watcher{Path: filepath.Join(t.TempDir(), "no-such-dir", "c.yaml")}).Start(); err == nil {
		t.Error("Start on a missing directory succeeded")
	}
}
