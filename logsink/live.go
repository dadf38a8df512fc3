package logsink

// The settings a config reload changes while the sink runs. Every other
// Option is fixed from Open to Close: changing where or how records are
// written (path, driver, dsn, spill folder, queue) needs a restart.

// SetStoreBodies turns the storing of request and response bodies on or
// off (Options.StoreBodies) for the records written from now on, those
// already queued included.
func (s *Sink) SetStoreBodies(on bool) { s.storeBodies.Store(on) }

// SetMaxBodyLogBytes changes Options.MaxBodyLogBytes for the records
// written from now on; 0 keeps bodies whole.
func (s *Sink) SetMaxBodyLogBytes(n int) { s.maxBody.Store(int64(max(n, 0))) }

// applyLive hands the live settings to the deriver and the store; the
// writer calls it before deriving a record and before inserting rows.
func (w *writer) applyLive() {
	if w.s == nil {
		return // a writer of a test, without a sink
	}
	w.dv.maxBody = int(w.s.maxBody.Load())
	on := w.s.storeBodies.Load()
	switch st := w.st.(type) {
	case *sqliteStore:
		st.storeBodies = on
	case *pgStore:
		st.storeBodies = on
	}
}
