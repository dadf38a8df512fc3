package loadgen

import "time"

// spinWindow is how long before a due time the pacer stops sleeping and
// spins: the kernel's wake-up latency, so that requests leave on time.
const spinWindow = 60 * time.Microsecond

// sleepUntil waits until due: a sleep while far away, a spin for the last
// spinWindow.
func (p *pacer) sleepUntil(due time.Time) {
	if rem := time.Until(due) - spinWindow; rem > 0 {
		p.sleep(rem)
	}
	for time.Now().Before(due) {
	}
}
