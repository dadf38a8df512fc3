package main

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// machineFacts describes the host for the report.
func machineFacts() [][2]string {
	host, _ := os.Hostname()
	facts := [][2]string{
		{"host", host},
		{"CPU", cpuModel()},
		{"online CPUs", strconv.Itoa(onlineCPUs())},
		{"kernel", readTrim("/proc/sys/kernel/osrelease")},
		{"memory", memTotal()},
		{"harness CPUs allowed", statusField("Cpus_allowed_list")},
		{"harness nice (inherited by everything it starts)", selfNice()},
	}
	return facts
}

// versions of everything measured and measuring.
func versions(s *setup) [][2]string {
	v := [][2]string{{"go (harness)", runtime.Version()}}
	if out, err := exec.Command(s.gptapi, "-version").CombinedOutput(); err == nil {
		v = append(v, [2]string{"gptapi", strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(string(out)), "\n", "; ")), " ")})
	}
	if s.nginx != "" {
		v = append(v, [2]string{"nginx", strings.TrimPrefix(toolVersion(s.nginx, "-v"), "nginx version: ")})
	}
	if s.wrk != "" {
		w := toolVersion(s.wrk, "-v")
		w, _, _ = strings.Cut(w, " Copyright")
		v = append(v, [2]string{"wrk", w})
	}
	if s.hey != "" {
		h := toolVersion("dpkg-query", "-W", "-f", "${Version}", "hey")
		if h == "" {
			h = "installed"
		}
		v = append(v, [2]string{"hey", h})
	}
	return v
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

// onlineCPUs counts /sys/devices/system/cpu/online ("0-1,4"); the harness's
// own affinity would say 1 once it is pinned.
func onlineCPUs() int {
	n, ok := countCPUList(readTrim("/sys/devices/system/cpu/online"))
	if !ok {
		return runtime.NumCPU()
	}
	return n
}

// countCPUList counts a kernel CPU list such as "0-3,8,10-11".
func countCPUList(s string) (int, bool) {
	n := 0
	for part := range strings.SplitSeq(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(strings.TrimSpace(lo))
		if err != nil {
			return 0, false
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(strings.TrimSpace(hi)); err != nil || b < a {
				return 0, false
			}
		}
		n += b - a + 1
	}
	return n, n > 0
}

func memTotal() string {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			f := strings.Fields(v)
			if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
				return strconv.FormatFloat(kb/1024/1024, 'f', 1, 64) + " GiB"
			}
		}
	}
	return "?"
}

func statusField(name string) string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// loadAvg is the 1-minute load average, a hint of what else ran.
func loadAvg() string {
	f := strings.Fields(readTrim("/proc/loadavg"))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// selfNice is the harness's nice value (field 19 of /proc/self/stat).
func selfNice() string {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return "?"
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return "?"
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 17 {
		return "?"
	}
	return f[16]
}
