package main

import "time"

// simClock is the process's one simulated clock: simulated time is the wall
// time since start multiplied by speed. Every engine of the process reads the
// same clock, so the fleet stays in step whatever each engine is doing.
type simClock struct {
	start time.Time
	speed float64
}

func newSimClock(speed float64) *simClock {
	return &simClock{start: time.Now(), speed: speed}
}

// now is the simulated time since start.
func (c *simClock) now() time.Duration {
	return time.Duration(float64(time.Since(c.start)) * c.speed)
}

// wallUntil is the wall time left until simulated time t; negative if past.
func (c *simClock) wallUntil(t time.Duration) time.Duration {
	return time.Until(c.start.Add(time.Duration(float64(t) / c.speed)))
}
