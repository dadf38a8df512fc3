// Package configs owns gptapi's configuration file: the schema (the structs
// below, whose comments document every key and its default), loading it with
// koanf, ${ENV} expansion, strict decoding and validation that name the key
// path of every problem, and the Watcher that reloads the file when it changes
// or on SIGHUP.
//
// A *Config returned by Load is complete (defaults applied, base URLs trimmed,
// trusted proxies parsed) and is never modified afterwards, so callers may
// publish it as an immutable snapshot behind an atomic.Pointer.
//
// The shipped config.yaml (the `make run` setup against the local mock fleet)
// and the files in examples/ double as the user's reference; every one of them
// is loaded by the tests.
package configs
