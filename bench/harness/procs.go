package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a child process the harness started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file with its stdout and stderr

	done chan struct{} // closed when it has exited
	err  error         // its exit status, valid after done
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// startProc starts bin with args, pinned to cpus when cpus is not empty
// (taskset execs bin, so the pid is bin's), with env added to the harness's
// environment and output to logPath.
func startProc(name, cpus string, env []string, logPath, bin string, args ...string) (*proc, error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("cannot create %s: %w", logPath, err)
	}
	defer out.Close()
	argv := append([]string{bin}, args...)
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), env...)
	// The child is killed if the thread that started it goes away; the
	// harness never ends a locked thread (see loadgen's pacer).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends sig and waits up to grace for the exit, then kills the process
// and its children. It reports whether the exit came within grace.
func (p *proc) stop(sig syscall.Signal, grace time.Duration) bool {
	if p.exited() {
		return true
	}
	kids := childPids(p.pid())
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	<-p.done
	return false
}

// stopAll stops every process still running, newest first.
func stopAll() {
	procsMu.Lock()
	ps := append([]*proc(nil), procs...)
	procsMu.Unlock()
	for i := len(ps) - 1; i >= 0; i-- {
		ps[i].stop(syscall.SIGTERM, 3*time.Second)
	}
}

// logTail is the end of p's log, for error messages.
func (p *proc) logTail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// cpuSample is a process's CPU time so far, read two ways: the per-thread
// run time from schedstat (nanoseconds, but a thread that exited takes its
// share with it) and utime+stime from stat (clock ticks, but kept for exited
// threads too).
type cpuSample struct {
	run   time.Duration
	ticks int64
}

// cpuOf samples pid's CPU time; with kids it adds pid's children (nginx's
// workers).
func cpuOf(pid int, kids bool) (cpuSample, error) {
	s, err := cpuOne(pid)
	if err != nil || !kids {
		return s, err
	}
	for _, k := range childPids(pid) {
		if ks, err := cpuOne(k); err == nil {
			s.run += ks.run
			s.ticks += ks.ticks
		}
	}
	return s, nil
}

func cpuOne(pid int) (cpuSample, error) {
	var s cpuSample
	dir := filepath.Join("/proc", strconv.Itoa(pid))
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return s, err
	}
	if s.ticks, err = parseStatTicks(b); err != nil {
		return s, err
	}
	tasks, _ := os.ReadDir(filepath.Join(dir, "task"))
	for _, t := range tasks {
		if b, err := os.ReadFile(filepath.Join(dir, "task", t.Name(), "schedstat")); err == nil {
			s.run += parseSchedRun(b)
		}
	}
	return s, nil
}

// parseSchedRun reads the first field of a schedstat line: nanoseconds on CPU.
func parseSchedRun(b []byte) time.Duration {
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return 0
	}
	return time.Duration(n)
}

// since is the CPU time spent from earlier to s: the precise run time, unless
// the tick count says more than two ticks went missing with exited threads.
func (s cpuSample) since(earlier cpuSample) time.Duration {
	run := s.run - earlier.run
	ticks := time.Duration(s.ticks-earlier.ticks) * time.Second / clockTicks
	if ticks > run+2*time.Second/clockTicks {
		return ticks
	}
	return max(run, 0)
}

// errStat is a /proc/<pid>/stat line that cannot be read.
var errStat = errors.New("harness: malformed /proc stat line")

// parseStatTicks reads utime+stime (fields 14 and 15) from a stat line; the
// command name in parentheses may itself hold spaces and parentheses.
func parseStatTicks(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errStat
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14.
	if len(f) < 13 {
		return 0, errStat
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, errStat
	}
	return u + s, nil
}

// parseStatPPid reads the parent pid (field 4) from a stat line.
func parseStatPPid(b []byte) (int, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errStat
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, errStat
	}
	return strconv.Atoi(f[1])
}

// childPids lists the processes whose parent is pid.
func childPids(pid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var kids []int
	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		if pp, err := parseStatPPid(b); err == nil && pp == pid {
			kids = append(kids, k)
		}
	}
	return kids
}

// freePort asks the kernel for a free port on 127.0.0.1.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
