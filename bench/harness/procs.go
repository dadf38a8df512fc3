package main

import (
	"bufio"
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

// proc is a child process the harness started and must stop.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string // file with its stdout and stderr
	cg   string // its cgroup folder, "" when CPU is read from /proc

	done chan struct{} // closed when it has exited
	err  error         // its exit status, valid after done
}

var (
	procsMu sync.Mutex
	procs   []*proc
)

// cgroupDir is the cgroup v2 folder this harness made, with one cgroup per
// target process tree in it; "" when CPU time comes from /proc.
var cgroupDir string

// openCgroups makes the harness's cgroup folder under the cgroup v2 mount
// and checks that a child can be started in it, and says where CPU time
// will be read from.
func openCgroups(use bool) string {
	const fallback = "/proc/<pid>/stat utime+stime of the process (every thread, exited ones too) and, for nginx, of its workers; 10 ms ticks"
	if !use {
		return fallback + " (-cgroup=false)"
	}
	mnt := cgroup2Mount()
	if mnt == "" {
		return fallback + " (no cgroup v2 mount)"
	}
	dir := filepath.Join(mnt, "gptapi-bench-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return fallback + " (cgroup v2 not writable: " + err.Error() + ")"
	}
	cgroupDir = dir
	probe := &proc{name: "probe"}
	if err := probe.start(exec.Command("true"), "probe"); err != nil {
		closeCgroups()
		return fallback + " (cannot start a process in a cgroup: " + err.Error() + ")"
	}
	<-probe.done
	return "cgroup v2: usage_usec of cpu.stat of one cgroup per target process tree (" + dir + "/<process>), every thread and child process, exited ones too"
}

// cgroup2Mount is where cgroup v2 is mounted: /sys/fs/cgroup on a unified
// system, /sys/fs/cgroup/unified on a hybrid one; "" when it is not.
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[2] == "cgroup2" {
			return fs[1]
		}
	}
	return ""
}

// closeCgroups removes the harness's cgroups once their processes are gone.
func closeCgroups() {
	if cgroupDir == "" {
		return
	}
	kids, _ := os.ReadDir(cgroupDir)
	for _, k := range kids {
		if k.IsDir() {
			_ = os.Remove(filepath.Join(cgroupDir, k.Name()))
		}
	}
	_ = os.Remove(cgroupDir)
	cgroupDir = ""
}

// startProc starts bin with args, pinned to cpus when cpus is not empty
// (taskset execs bin, so the pid is bin's), with env added to the harness's
// environment, output to logPath, in the cgroup name when cgroups are on.
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
	p := &proc{name: name, log: logPath}
	if err := p.start(cmd, name); err != nil {
		return nil, err
	}
	procsMu.Lock()
	procs = append(procs, p)
	procsMu.Unlock()
	return p, nil
}

// start starts cmd, inside the cgroup cg of the harness's folder when
// there is one: the kernel puts the child there before it runs (clone3
// CLONE_INTO_CGROUP), so every thread and process it makes is counted.
func (p *proc) start(cmd *exec.Cmd, cg string) error {
	// The child is killed if the thread that started it goes away; the
	// harness never ends a locked thread (see loadgen's pacer).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if cgroupDir != "" {
		p.cg = filepath.Join(cgroupDir, cg)
		if err := os.Mkdir(p.cg, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cannot make cgroup %s: %w", p.cg, err)
		}
		fd, err := syscall.Open(p.cg, syscall.O_DIRECTORY|syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("cannot open cgroup %s: %w", p.cg, err)
		}
		defer syscall.Close(fd)
		cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, fd
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("cannot start %s: %w", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return nil
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
	tree := p.tree() // before the children lose their parent
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return true
	case <-time.After(grace):
	}
	for _, pid := range tree {
		_ = syscall.Kill(pid, syscall.SIGKILL)
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

// tree lists the process and its children.
func (p *proc) tree() []int {
	if p.cg != "" {
		b, _ := os.ReadFile(filepath.Join(p.cg, "cgroup.procs"))
		var pids []int
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return pids
	}
	return append([]int{p.pid()}, childPids(p.pid())...)
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

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// it is 100 on every Linux architecture Go supports.
const clockTicks = 100

// cpu is the CPU time p's process tree has spent so far: its cgroup's
// usage_usec, or else utime+stime of the process and its children.
func (p *proc) cpu() (time.Duration, error) {
	if p.cg != "" {
		b, err := os.ReadFile(filepath.Join(p.cg, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		return parseUsage(b)
	}
	var ticks int64
	for i, pid := range p.tree() {
		f, err := statFields(pid)
		if err != nil && i == 0 {
			return 0, err
		}
		if len(f) > 12 {
			u, _ := strconv.ParseInt(f[11], 10, 64) // field 14, utime
			s, _ := strconv.ParseInt(f[12], 10, 64) // field 15, stime
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

var errFormat = errors.New("harness: unexpected format")

// parseUsage reads usage_usec from a cgroup's cpu.stat.
func parseUsage(b []byte) (time.Duration, error) {
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("usage_usec ")); ok {
			us, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("%w: cpu.stat %q", errFormat, line)
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, fmt.Errorf("%w: no usage_usec in cpu.stat", errFormat)
}

// statFields reads /proc/<pid>/stat from field 3 (state) on; the command
// name before it, in parentheses, may itself hold spaces and parentheses.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	return splitStat(b)
}

func splitStat(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("%w: /proc stat %.40q", errFormat, b)
	}
	return strings.Fields(string(b[i+1:])), nil
}

// childPids lists the processes whose parent is pid.
func childPids(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		k, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f, err := statFields(k); err == nil && len(f) > 1 && f[1] == strconv.Itoa(pid) {
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
