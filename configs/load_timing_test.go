package configs

import "testing"

// Loading is off the request path (start-up and reloads); this keeps an eye
// on what a reload of the shipped config costs.
func BenchmarkLoad(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		cfg, err := Load("config.yaml")
		if err != nil {
			b.Fatal(err)
		}
		Sink = cfg
	}
}

// Sink keeps benchmark results alive.
var Sink *Config
