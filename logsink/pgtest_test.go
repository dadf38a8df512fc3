package logsink

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgServer is a PostgreSQL the tests start in a temporary data folder on a
// free loopback port, as the postgres user when run as root (initdb
// refuses root), and stop at the end. Debian's postgresql package provides
// it; make deps installs it.
type pgServer struct {
	bin  string // folder of initdb, pg_ctl
	dir  string // data folder
	port int
	as   []string // runuser prefix, or none
	// durable keeps fsync on, as a production server runs; tests run
	// without it
	durable bool
}

// pgBinDir finds PostgreSQL's programs: pg_config, Debian's versioned
// folders, or PATH.
func pgBinDir() string {
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d
		}
	}
	if ds, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(ds) > 0 {
		sort.Strings(ds)
		return ds[len(ds)-1]
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p)
	}
	return ""
}

// startPG starts a PostgreSQL of the test's own, stopped when it ends. It
// skips the test only when PostgreSQL is not installed.
func startPG(t testing.TB) *pgServer { return startPGOpts(t, false) }

func startPGOpts(t testing.TB, durable bool) *pgServer {
	t.Helper()
	bin := pgBinDir()
	if bin == "" {
		t.Skip("PostgreSQL is not installed (Debian: apt-get install postgresql, or make deps); skipping the PostgreSQL store tests")
	}
	p := &pgServer{bin: bin, durable: durable}
	base, err := os.MkdirTemp("", "gptapi-pg-")
	if err != nil {
		t.Fatal(err)
	}
	p.dir = filepath.Join(base, "data")
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("running as root and no postgres user to run PostgreSQL as: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(base, uid, gid); err != nil {
			t.Fatal(err)
		}
		p.as = []string{"runuser", "-u", "postgres", "--"}
	}
	t.Cleanup(func() {
		p.run(t, "pg_ctl", "-D", p.dir, "-m", "immediate", "-w", "stop")
		os.RemoveAll(base)
	})
	if out, err := p.cmd("initdb", "-D", p.dir, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	p.port = freePort(t)
	p.start(t)
	return p
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func (p *pgServer) cmd(prog string, args ...string) *exec.Cmd {
	argv := append(append([]string{}, p.as...), filepath.Join(p.bin, prog))
	argv = append(argv, args...)
	return exec.Command(argv[0], argv[1:]...)
}

func (p *pgServer) run(t testing.TB, prog string, args ...string) {
	if out, err := p.cmd(prog, args...).CombinedOutput(); err != nil {
		t.Logf("%s %v: %v\n%s", prog, args, err, out)
	}
}

// start starts the server (again) on its port and waits until it takes
// connections.
func (p *pgServer) start(t testing.TB) {
	t.Helper()
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c max_connections=50", p.port, p.dir)
	if !p.durable {
		opts += " -c fsync=off"
	}
	if out, err := p.cmd("pg_ctl", "-D", p.dir, "-l", filepath.Join(p.dir, "log"), "-o", opts, "-w", "-t", "60", "start").CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// stop stops the server: fast (sessions ended, clean) or immediate (as a
// crash).
func (p *pgServer) stop(t testing.TB, mode string) {
	t.Helper()
	if out, err := p.cmd("pg_ctl", "-D", p.dir, "-m", mode, "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

func (p *pgServer) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres:s3cret-pw@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

var (
	sharedOnce sync.Once
	shared     *pgServer
	sharedErr  string
	dbSeq      atomic.Int64
)

// sharedPG is one server for the tests that do not stop it.
func sharedPG(t testing.TB) *pgServer {
	t.Helper()
	sharedOnce.Do(func() {
		st := &onceT{TB: t}
		func() {
			defer func() { recover() }()
			shared = startPGFor(st)
		}()
		sharedErr = st.msg
	})
	if shared == nil {
		if strings.Contains(sharedErr, "not installed") {
			t.Skip(sharedErr)
		}
		t.Fatalf("cannot start PostgreSQL: %s", sharedErr)
	}
	return shared
}

// newDB creates a fresh database on p and returns its dsn.
func newDB(t testing.TB, p *pgServer) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	conn := pgConn(t, p.dsn("postgres"))
	if _, err := conn.Exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	return p.dsn(name)
}

func pgConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgIDs is the request_id column in id order.
func pgIDs(t testing.TB, dsn string) []string {
	t.Helper()
	rows, err := pgConn(t, dsn).Query(context.Background(), "SELECT request_id FROM requests ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// onceT records a Fatal or Skip of the shared server's start instead of
// ending the test that happened to start it first.
type onceT struct {
	testing.TB
	msg string
}

func (o *onceT) Helper() {}
func (o *onceT) Cleanup(func()) {
	// the shared server lives until the process exits: TestMain stops it
}
func (o *onceT) Fatalf(f string, args ...any) { o.msg = fmt.Sprintf(f, args...); panic(o) }
func (o *onceT) Fatal(args ...any)            { o.msg = fmt.Sprint(args...); panic(o) }
func (o *onceT) Skip(args ...any)             { o.msg = fmt.Sprint(args...); panic(o) }
func (o *onceT) Logf(string, ...any)          {}

// startPGFor is startPG for the shared server, which TestMain stops.
func startPGFor(t testing.TB) *pgServer { return startPG(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.cmd("pg_ctl", "-D", shared.dir, "-m", "immediate", "-w", "stop").Run()
		os.RemoveAll(filepath.Dir(shared.dir))
	}
	os.Exit(code)
}
