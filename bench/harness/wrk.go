package main

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// wrkResult is what wrk printed (run with --latency).
type wrkResult struct {
	Requests     int64 // completed
	RPS          float64
	P50, P99     time.Duration
	SocketErrors int64 // connect + read + write + timeout
	Non2xx       int64
}

var (
	wrkTotal  = regexp.MustCompile(`(\d+) requests in `)
	wrkRPS    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkSocket = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkPct    = regexp.MustCompile(`(?m)^\s*(50|99)(?:\.0+)?%\s+([\d.]+(?:us|ms|s))\s*$`)
)

// errWrkOutput is wrk output the harness cannot read.
var errWrkOutput = errors.New("harness: unreadable wrk output")

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	total, rps := wrkTotal.FindStringSubmatch(out), wrkRPS.FindStringSubmatch(out)
	if total == nil || rps == nil {
		return r, fmt.Errorf("%w: %.300s", errWrkOutput, out)
	}
	r.Requests, _ = strconv.ParseInt(total[1], 10, 64)
	r.RPS, _ = strconv.ParseFloat(rps[1], 64)
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		for _, x := range m[1:] {
			n, _ := strconv.ParseInt(x, 10, 64)
			r.SocketErrors += n
		}
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	for _, m := range wrkPct.FindAllStringSubmatch(out, -1) {
		d, _ := time.ParseDuration(m[2])
		if m[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	return r, nil
}
