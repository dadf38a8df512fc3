package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is a child process this command started.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs bin with args, output to logPath. The child dies with us.
func start(name, logPath string, stdout io.Writer, bin string, args ...string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if stdout != nil {
		cmd.Stdout = io.MultiWriter(f, stdout)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // also waits for the copy of its output, when stdout is set
		f.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, waits up to grace, then kills.
func (p *proc) stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}

// fleet is a running simulator.
type fleet struct {
	p     *proc
	addrs []string
}

// startFleet starts the simulator with n servers on free ports and waits
// until they listen.
func startFleet(bin, dir string, n int, speed float64, kv int) (*fleet, error) {
	pr, pw := io.Pipe()
	p, err := start("fleetsim", filepath.Join(dir, "fleetsim.log"), pw, bin,
		"-listen", "127.0.0.1:0", "-n", strconv.Itoa(n), "-speed", strconv.FormatFloat(speed, 'g', -1, 64),
		"-kv-tokens", strconv.Itoa(kv))
	if err != nil {
		return nil, err
	}
	f := &fleet{p: p}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if _, addr, ok := strings.Cut(line, " listening on "); ok {
				f.addrs = append(f.addrs, addr)
			}
			if strings.HasPrefix(line, "fleetsim ready") {
				ready <- nil
				break
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case <-ready:
		return f, nil
	case <-p.done:
		return nil, fmt.Errorf("fleetsim exited: %s", p.tail())
	case <-time.After(10 * time.Second):
		p.stop(time.Second)
		return nil, fmt.Errorf("fleetsim did not start: %s", p.tail())
	}
}

// gptapiConfig is gptapi in front of the fleet: one client per server,
// each with its metrics_url, the routing strategy, records without bodies
// (the prompts are large and say nothing), timeouts long enough for the
// queues of an overloaded fleet.
func gptapiConfig(port int, dir, strategy string, poll time.Duration, model string, addrs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by bench/fleet for one run
server:
  listen: "127.0.0.1:%d"
log:
  level: warn
logsink:
  path: %s
  spill_dir: %s
  store_bodies: false
check_config:
  first_byte_timeout: 600s
  stream_idle_timeout: 600s
routing:
  strategy: %s
  poll_interval: %s
openai_clients:
`, port, filepath.Join(dir, "gptapi.db"), filepath.Join(dir, "spill"), strategy, poll)
	for i, a := range addrs {
		fmt.Fprintf(&b, `  - name: s%d
    base_url: http://%s/v1
    metrics_url: http://%s/metrics
    model_match: {type: exact, value: %q}
`, i, a, a, model)
	}
	return b.String()
}

// startGptapi starts one gptapi with cfg in dir and waits for /health.
func startGptapi(bin, dir string, port int, cfg string) (*proc, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := start("gptapi", filepath.Join(dir, "gptapi.log"), nil, bin, "-config", path)
	if err != nil {
		return nil, err
	}
	url := fmt.Sprintf("http://127.0.0.1:%d/health", port)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("gptapi exited: %s", p.tail())
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.stop(time.Second)
	return nil, fmt.Errorf("gptapi did not answer /health: %s", p.tail())
}

// freePort asks the kernel for a port nobody listens on.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
