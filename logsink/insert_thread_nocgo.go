//go:build !cgo

package logsink

import (
	"context"
	"errors"
)

// insertThread needs cgo, as SQLite does: without it go-sqlite3 opens no
// file, so openStore fails before it gets here.
type insertThread struct{ buf []byte }

func openInsertThread(path, insertSQL string, cols int) (*insertThread, error) {
	return nil, errors.New("SQLite needs a build with cgo")
}

func (t *insertThread) run(ctx context.Context, batch []byte, rows int) error {
	return errors.New("SQLite needs a build with cgo")
}

func (t *insertThread) close() {}

func (t *insertThread) yields() int64 { return 0 }
