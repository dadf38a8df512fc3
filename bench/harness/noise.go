package main

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"
	"time"
)

// The machine is shared: other processes may run on the cores the benchmark
// pinned its own to. The harness measures how much, per phase, so that a
// reader can tell a clean figure from a disturbed one.

// coreTicks is one CPU's time from /proc/stat, in clock ticks.
type coreTicks struct{ busy, total int64 }

// readCore reads the line of CPU n in /proc/stat.
func readCore(n int) (coreTicks, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return coreTicks{}, false
	}
	return parseCore(b, n)
}

// parseCore finds "cpuN user nice system idle iowait irq softirq steal …".
func parseCore(b []byte, n int) (coreTicks, bool) {
	prefix := "cpu" + strconv.Itoa(n) + " "
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), prefix)
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 8 {
			return coreTicks{}, false
		}
		var v [8]int64
		for i := range v {
			x, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return coreTicks{}, false
			}
			v[i] = x
		}
		// irq and softirq time is left out of busy: on loopback most of it
		// is the benchmark's own packets, which no process is charged for.
		// steal (the hypervisor's) is noise like any other process.
		busy := v[0] + v[1] + v[2] + v[7]
		return coreTicks{busy: busy, total: v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]}, true
	}
	return coreTicks{}, false
}

// parseStatAllTicks reads utime+stime+cutime+cstime (fields 14–17): a
// process's own time and that of the children it has waited for.
func parseStatAllTicks(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errStat
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, errStat
	}
	var sum int64
	for _, x := range f[11:15] {
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, errStat
		}
		sum += n
	}
	return sum, nil
}

// noiseProbe measures the share of the generator's and the targets' cores
// that other processes took during a phase. It needs each side pinned to one
// CPU; otherwise it reports nothing.
type noiseProbe struct {
	genCPU, sutCPU int // -1: not pinned to a single CPU
	sut            []*proc

	gen0, sut0   coreTicks
	self0        int64
	own0         time.Duration
	genOK, sutOK bool
}

func newNoiseProbe(s *setup, sut []*proc) *noiseProbe {
	return &noiseProbe{genCPU: singleCPU(s.genCPUs), sutCPU: singleCPU(s.sutCPUs), sut: sut}
}

// singleCPU is the CPU a list like "1" names, -1 for anything else.
func singleCPU(list string) int {
	n, err := strconv.Atoi(strings.TrimSpace(list))
	if err != nil {
		return -1
	}
	return n
}

func (np *noiseProbe) start() {
	np.genOK, np.sutOK = false, false
	if np.genCPU >= 0 {
		np.gen0, np.genOK = readCore(np.genCPU)
		np.self0 = selfTicks()
	}
	if np.sutCPU >= 0 {
		np.sut0, np.sutOK = readCore(np.sutCPU)
		np.own0 = np.ownRun()
	}
}

// stop returns the other processes' share (0..1) of each core since start;
// a negative value means unknown.
func (np *noiseProbe) stop() (gen, sut float64) {
	gen, sut = -1, -1
	if np.genOK {
		if c, ok := readCore(np.genCPU); ok && c.total > np.gen0.total {
			other := float64(c.busy-np.gen0.busy) - float64(selfTicks()-np.self0)
			gen = max(0, other/float64(c.total-np.gen0.total))
		}
	}
	if np.sutOK {
		if c, ok := readCore(np.sutCPU); ok && c.total > np.sut0.total {
			own := (np.ownRun() - np.own0).Seconds() * clockTicks
			other := float64(c.busy-np.sut0.busy) - own
			sut = max(0, other/float64(c.total-np.sut0.total))
		}
	}
	return gen, sut
}

// ownRun is the CPU time of every process on the targets' core.
func (np *noiseProbe) ownRun() time.Duration {
	var d time.Duration
	for _, p := range np.sut {
		if p.exited() {
			continue
		}
		if s, err := cpuOf(p.pid(), true); err == nil {
			d += s.run
		}
	}
	return d
}

// selfTicks is the harness's CPU time with its waited-for children (wrk, hey).
func selfTicks() int64 {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	n, _ := parseStatAllTicks(b)
	return n
}
