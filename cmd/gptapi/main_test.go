package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gptapi builds the binary once per test run, stamped as make build stamps
// it, and returns its path.
func gptapi(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "gptapi")
	out, err := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X main.version=v9.9.9-test -X main.commit=abc1234", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runBin runs bin with args and returns its exit code and what it printed.
func runBin(t *testing.T, bin string, env []string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(append(os.Environ(), "GPTAPI_CONFIG="), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out)
	}
	t.Fatalf("%s %v: %v", bin, args, err)
	return 0, ""
}

// The flags a user and make test rely on: -version prints the stamps, and
// -check exits 0 on a good config and 1 with every problem by key path.
func TestFlags(t *testing.T) {
	bin := gptapi(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var env []string
	f := func(wantCode int, wantOut []string, args ...string) {
		t.Helper()
		code, out := runBin(t, bin, env, args...)
		if code != wantCode {
			t.Fatalf("%v: exit %d, want %d\n%s", args, code, wantCode, out)
		}
		for _, w := range wantOut {
			if !strings.Contains(out, w) {
				t.Fatalf("%v: output lacks %q:\n%s", args, w, out)
			}
		}
	}
	f(0, []string{"gptapi v9.9.9-test (commit abc1234)", "json parser:"}, "-version")
	f(0, []string{"../../configs/config.yaml: ok ("}, "-check", "-config", "../../configs/config.yaml")
	openai := "../../configs/examples/openai.yaml"
	f(1, []string{"auth.keys[0]: environment variable GPTAPI_KEY is not set",
		"openai_clients[0].api_key: environment variable OPENAI_API_KEY"}, "-check", "-config", openai)
	env = []string{"GPTAPI_KEY=sk-gw", "OPENAI_API_KEY=sk-o", "OPENROUTER_API_KEY=sk-r"}
	f(0, []string{openai + ": ok ("}, "-check", "-config", openai)
	env = nil
	bad := write("bad.yaml", "server:\n  listen: \":8080\"\n  lisen: \":9090\"\nlogsink:\n  queue_size: -1\n")
	f(1, []string{bad + ": ", "server.lisen", "logsink.queue_size"}, "-check", "-config", bad)
	f(1, []string{"missing.yaml"}, "-check", "-config", filepath.Join(dir, "missing.yaml"))
	f(1, []string{"unexpected arguments"}, "-check", "extra")
}
