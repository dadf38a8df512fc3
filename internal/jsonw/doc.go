// Package jsonw writes JSON text on bytes: the one string escaper of the
// tree, shared by sse (chunk rewriting, error events), proxy (error bodies,
// request rewriting, the Tried list) and logsink (assembled answers,
// columns), and the writer of parsed fastjson values, whose own MarshalTo
// can write Go syntax where JSON is due (see AppendValue). It also reads
// member names as parsers do (Key), for sse's chunks and proxy's requests
// alike. It imports nothing of gptapi, so every package may use it without
// changing which way imports flow.
package jsonw
