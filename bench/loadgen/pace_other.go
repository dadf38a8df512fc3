//go:build !linux

package loadgen

import "time"

// pacer sleeps with the Go runtime's timers; only Linux gets the precise one.
type pacer struct{}

func newPacer() *pacer                 { return &pacer{} }
func (p *pacer) sleep(d time.Duration) { time.Sleep(d) }
func (p *pacer) close()                {}
