// Package testsrv starts throw-away PostgreSQL and Redis servers and Redis
// Clusters from the installed binaries, on free ports in temporary
// directories, so tests talk to real servers and can kill and restart them;
// and it holds what the test packages that start Caddy share.
package testsrv

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// FreePort returns a port number on 127.0.0.1 that was free a moment ago on
// both TCP and UDP (a site's HTTP/3 takes the same number over UDP).
func FreePort() (int, error) {
	var err error
	for range 20 {
		var l net.Listener
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		// HTTP/3 serves on the same number over UDP.
		var u net.PacketConn
		u, err = net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free on both TCP and UDP: %w", err)
}

// RelayHTTP2 is the global option that has the relay serve the HTTP/2
// connections of every site (the sse_relay listener wrapper), for the
// tests and the load tool.
const RelayHTTP2 = `servers {
		listener_wrappers {
			sse_relay
		}
	}`

// ForceGC has the Caddy whose admin endpoint is at admin (http://host:port)
// run n garbage collections, one after another (a goroutine's stack
// shrinks by half at most once a collection).
func ForceGC(admin string, n int) error {
	client := &http.Client{Timeout: 30 * time.Second}
	for range n {
		resp, err := client.Get(admin + "/debug/pprof/heap?gc=1")
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /debug/pprof/heap?gc=1: %s", resp.Status)
		}
	}
	return nil
}

// Postgres is a private PostgreSQL cluster.
type Postgres struct {
	Port int
	dir  string
	bin  string
	asPG bool // running as root: run the server as the postgres user
	mu   sync.Mutex
}

// URL is a connection URL for the cluster's postgres database.
func (p *Postgres) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
}

func postgresBin() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return pgVersion(dirs[i]) > pgVersion(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("PostgreSQL server binaries (initdb, pg_ctl) not found: install the postgresql package (make test does)")
}

func pgVersion(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// StartPostgres creates and starts a cluster; Stop removes it.
func StartPostgres() (*Postgres, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "sserelay-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{dir: dir, bin: bin, asPG: os.Geteuid() == 0}
	if p.asPG {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the postgres user: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			return nil, err
		}
	}
	if out, err := p.run("initdb", "-D", p.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if p.Port, err = FreePort(); err != nil {
		return nil, err
	}
	return p, p.Start()
}

func (p *Postgres) data() string { return filepath.Join(p.dir, "data") }

func (p *Postgres) run(tool string, args ...string) ([]byte, error) {
	path := filepath.Join(p.bin, tool)
	var cmd *exec.Cmd
	if p.asPG {
		cmd = exec.Command("runuser", append([]string{"-u", "postgres", "--", path}, args...)...)
	} else {
		cmd = exec.Command(path, args...)
	}
	cmd.Dir = p.dir
	return cmd.CombinedOutput()
}

// Start starts the server (again) on its port.
func (p *Postgres) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", p.Port, p.dir)
	out, err := p.run("pg_ctl", "-D", p.data(), "-o", opts, "-l", filepath.Join(p.dir, "log"), "-w", "-t", "30", "start")
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(p.dir, "log"))
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return nil
}

// Kill stops the server at once (immediate mode), like a crash.
func (p *Postgres) Kill() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	out, err := p.run("pg_ctl", "-D", p.data(), "-m", "immediate", "-w", "stop")
	if err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Stop stops the server and removes its files.
func (p *Postgres) Stop() {
	_ = p.Kill()
	_ = os.RemoveAll(p.dir)
}

// Redis is a private redis-server process.
type Redis struct {
	Port  int
	dir   string
	fsync string   // appendfsync
	args  []string // more redis-server options, such as a cluster node's
	mu    sync.Mutex
	cmd   *exec.Cmd
}

// URL is a connection URL for database 0.
func (r *Redis) URL() string { return fmt.Sprintf("redis://127.0.0.1:%d/0", r.Port) }

// StartRedis starts a redis-server on a free port; Stop ends it.
func StartRedis() (*Redis, error) { return StartRedisFsync("always") }

// StartRedisFsync is StartRedis with another appendfsync policy: the
// benchmarks use everysec, the common production setting.
func StartRedisFsync(policy string) (*Redis, error) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		return nil, errors.New("redis-server not found: install the redis-server package (make test does)")
	}
	dir, err := os.MkdirTemp("", "sserelay-redis-")
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	r := &Redis{Port: port, dir: dir, fsync: policy}
	return r, r.Start()
}

// Start starts the server (again) on its port and waits until it answers.
// Its append-only file is written through on every command, so a Kill and
// Start keep every stream, as a production Redis with appendonly yes and
// appendfsync always would.
func (r *Redis) Start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "yes", "--appendfsync", r.fsync,
		"--dir", r.dir, "--logfile", filepath.Join(r.dir, "log"))
	cmd.Args = append(cmd.Args, r.args...)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redis-server: %w", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := ping(r.Port); err == nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return errors.New("redis-server did not answer within 10s")
}

func ping(port int) error {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := c.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		return fmt.Errorf("unexpected reply %q", buf[:n])
	}
	return nil
}

// PID is the server's process id, or 0 while it is not running.
func (r *Redis) PID() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return 0
	}
	return r.cmd.Process.Pid
}

// Kill ends the server with SIGKILL, like a crash.
func (r *Redis) Kill() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return nil
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
	return nil
}

// Stop ends the server and removes its files.
func (r *Redis) Stop() {
	_ = r.Kill()
	_ = os.RemoveAll(r.dir)
}

// Servers are the servers a test binary shares. Each starts the first
// time a test asks for it, so tests that need neither start neither.
type Servers struct {
	pgOnce, redisOnce sync.Once
	pg                *Postgres
	redis             *Redis
	pgErr, redisErr   error
	cluster           clusterServers
}

// PG is the shared PostgreSQL, started on first use. A server that cannot
// start fails the test: a missing server is an error, never a skip.
func (s *Servers) PG(t testing.TB) *Postgres {
	t.Helper()
	s.pgOnce.Do(func() { s.pg, s.pgErr = StartPostgres() })
	if s.pgErr != nil {
		t.Fatalf("test PostgreSQL: %v", s.pgErr)
	}
	return s.pg
}

// Redis is the shared Redis, started on first use; as PG.
func (s *Servers) Redis(t testing.TB) *Redis {
	t.Helper()
	s.redisOnce.Do(func() { s.redis, s.redisErr = StartRedis() })
	if s.redisErr != nil {
		t.Fatalf("test Redis: %v", s.redisErr)
	}
	return s.redis
}

// Main is a test binary's TestMain: it runs the tests with *s ready to
// start servers, then stops those that started and exits with the tests'
// code.
func Main(m *testing.M, s **Servers) {
	*s = new(Servers)
	code := m.Run()
	(*s).Stop()
	os.Exit(code)
}

// Stop stops the servers that started.
func (s *Servers) Stop() {
	s.pgOnce.Do(func() {})
	s.redisOnce.Do(func() {})
	if s.pg != nil {
		s.pg.Stop()
	}
	if s.redis != nil {
		s.redis.Stop()
	}
	s.cluster.once.Do(func() {})
	if s.cluster.cluster != nil {
		s.cluster.cluster.Stop()
	}
}

// WaitStreams waits up to 10 s until the Caddy admin endpoint at admin
// (http://host:port) counts want open sse_relay streams.
func WaitStreams(admin string, want int) error {
	deadline := time.Now().Add(10 * time.Second)
	client := &http.Client{Timeout: 5 * time.Second}
	for {
		var stats struct {
			Totals struct {
				Streams int `json:"streams"`
			} `json:"totals"`
		}
		resp, err := client.Get(admin + "/sse_relay/stats")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&stats)
			resp.Body.Close()
		}
		if err == nil && stats.Totals.Streams == want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("open streams: %d (%v), want %d", stats.Totals.Streams, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
