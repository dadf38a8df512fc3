//go:build cgo

package logsink

import (
	"database/sql/driver"

	"github.com/mattn/go-sqlite3"
)

// sqliteStore.insert reaches the driver's connection through sql.Conn.Raw and
// finds these methods at run time; a driver update that drops one must fail
// the build, not the first batch. (Without cgo go-sqlite3 is a stub that
// opens nothing.)
var (
	_ driver.ConnBeginTx        = (*sqlite3.SQLiteConn)(nil)
	_ driver.ConnPrepareContext = (*sqlite3.SQLiteConn)(nil)
	_ driver.StmtExecContext    = (*sqlite3.SQLiteStmt)(nil)
)
