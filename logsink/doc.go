// Package logsink owns the request records: their SQLite file (table
// requests, table meta, monthly rotation) or PostgreSQL tables (monthly
// partitions), the one background goroutine that
// writes them, the spill files that take records when the in-memory queue is
// full, and the JSON parsing that derives columns from the bodies.
//
// The request path only fills a pooled Record with copies of bytes it already
// has and calls Sink.Put, a non-blocking channel send. Everything else runs
// on the writer: parsing the request for has_tools and multimodal, parsing
// the answer for usage and tool names, assembling a stream's chunks into one
// chat.completion or text_completion object, cutting bodies to
// MaxBodyLogBytes, and batching inserts, BatchSize records or FlushInterval,
// whichever comes first, one transaction and one prepared statement each.
// A SQLite batch is packed into one buffer and inserted by a C thread with a
// connection of its own while the writer waits on a pipe (insert_thread.go),
// so that SQLite's work never holds one of Go's Ps.
//
// No record is dropped while the disk has room. When the queue is full,
// Put encodes the record as a frame into in-memory blocks (a copy under a
// mutex, no system call); one background goroutine appends the blocks to
// the current spill file. The writer seals and inserts spill files when
// the queue is empty, and deletes each once its records are committed;
// Open replays files a dead process left. A failing batch (disk full, the
// file locked by another connection, PostgreSQL away) is retried with
// backoff for up to WriteTimeout, then goes to the spill folder, logged
// once per interval with a count; meanwhile new records queue or spill.
// When the spill folder refuses writes too, frames wait in memory up to
// MaxPendingBytes; past that records are dropped, counted (Dropped) and
// logged once per interval, and Put stays as fast. Close writes everything
// and checkpoints; if the database still refuses, the records go to spill
// files for the next Open, and Close says so. CloseNow (or CloseContext
// once its context is done) stops waiting for the database and sends
// everything left to the spill folder at once. New files are 0600 in
// folders made 0700.
//
// Columns added after the first release (route, cached_tokens, node) are
// added to an older file when it is opened, NULL in its rows; nothing in it
// is rewritten. Each record carries a UID, made by Put, that stays with it
// through spill files, so a store that cannot know whether a commit landed
// can refuse a second copy.
//
// Rotation: meta.month is the UTC month a file belongs to. At Open and before
// each batch, if the clock's month differs, the batch's records of earlier
// months go into the old file, which is then checkpointed, closed and renamed
// to <stem>-YYYY-MM<ext> (with a numeric suffix if that name is taken), and a
// fresh file takes the rest.
//
// JSON parsing uses simdjson-go on amd64 CPUs with AVX2 and CLMUL (checked at
// run time) and fastjson elsewhere; on other architectures simdjson-go is not
// compiled in. Both feed the same assembly code and re-encode values the same
// way, so they give the same columns byte for byte; ParserName says which one
// runs.
//
// The package knows nothing of HTTP.
package logsink
