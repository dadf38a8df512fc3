package main

import (
	"bufio"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what wrk printed.
type wrkResult struct {
	Requests     int64   // completed requests
	Seconds      float64 // run time
	RPS          float64
	P50, P99     time.Duration // from --latency
	SocketErrors int64         // connect + read + write + timeout
	Non2xx       int64
}

var (
	wrkTotal  = regexp.MustCompile(`(\d+) requests in ([\d.]+)(us|ms|s|m)`)
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkPct    = regexp.MustCompile(`^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$`)

	heyRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	heyStatus = regexp.MustCompile(`^\s*\[(\d+)\]\s+(\d+) responses`)
	heyErrSec = regexp.MustCompile(`^Error distribution:`)
	heyErr    = regexp.MustCompile(`^\s*\[(\d+)\]\s+(.+)$`)
)

// errToolOutput is tool output the harness cannot read.
var errToolOutput = errors.New("harness: unreadable tool output")

func unitDuration(v float64, unit string) time.Duration {
	switch unit {
	case "us":
		return time.Duration(v * float64(time.Microsecond))
	case "ms":
		return time.Duration(v * float64(time.Millisecond))
	case "m":
		return time.Duration(v * float64(time.Minute))
	}
	return time.Duration(v * float64(time.Second))
}

// parseWrk reads wrk's report (run with --latency).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkTotal.FindStringSubmatch(out)
	rps := wrkRPS.FindStringSubmatch(out)
	if m == nil || rps == nil {
		return r, fmt.Errorf("%w: wrk: %.300s", errToolOutput, out)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	v, _ := strconv.ParseFloat(m[2], 64)
	r.Seconds = unitDuration(v, m[3]).Seconds()
	r.RPS, _ = strconv.ParseFloat(rps[1], 64)
	if s := wrkSocket.FindStringSubmatch(out); s != nil {
		for _, x := range s[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.SocketErrors += n
		}
	}
	if s := wrkNon2xx.FindStringSubmatch(out); s != nil {
		r.Non2xx, _ = strconv.ParseInt(s[1], 10, 64)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		p := wrkPct.FindStringSubmatch(sc.Text())
		if p == nil {
			continue
		}
		v, _ := strconv.ParseFloat(p[2], 64)
		d := unitDuration(v, p[3])
		if p[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	return r, nil
}

// heyResult is what hey printed.
type heyResult struct {
	RPS    float64
	Status map[int]int64 // responses by status code
	Errors int64         // requests that got no response
}

// Total is every response hey got.
func (h *heyResult) Total() int64 {
	var n int64
	for _, c := range h.Status {
		n += c
	}
	return n
}

// parseHey reads hey's default summary.
func parseHey(out string) (heyResult, error) {
	r := heyResult{Status: map[int]int64{}}
	m := heyRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("%w: hey: %.300s", errToolOutput, out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	inErrors := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if heyErrSec.MatchString(line) {
			inErrors = true
			continue
		}
		if inErrors {
			if e := heyErr.FindStringSubmatch(line); e != nil {
				n, _ := strconv.ParseInt(e[1], 10, 64)
				r.Errors += n
			}
			continue
		}
		if s := heyStatus.FindStringSubmatch(line); s != nil {
			code, _ := strconv.Atoi(s[1])
			n, _ := strconv.ParseInt(s[2], 10, 64)
			r.Status[code] += n
		}
	}
	return r, nil
}
