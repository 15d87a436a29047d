// Package example starts examples/django the way `make example` does: a
// throw-away PostgreSQL, the Django project under gunicorn, and Caddy with
// the example's Caddyfile in front of both. The browser test
// (e2e/example_test.go) starts the same stack through it.
package example

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sse-relay/caddy-sse-relay/internal/testsrv"
)

// Python is Debian's interpreter, where python3-django, python3-psycopg2
// and python3-gunicorn install (make example installs them).
const Python = "/usr/bin/python3"

// Users are the accounts the stack creates, each with a new random
// password.
var Users = []string{"alice", "bob"}

// Config says where the stack listens.
type Config struct {
	Caddy string // the Caddy binary built from cmd/caddy
	Host  string // the site's host: localhost unless set
	// Port is the site's: make example's is 8080; 0 picks a free one, and
	// another if it is taken by the time Caddy binds it.
	Port int
	// TLS serves the site on https:// with Caddy's internal CA (tls
	// internal), which HTTP/2 needs in browsers.
	TLS        bool
	PythonPath string // more of PYTHONPATH, ahead of the repository's contrib/django
}

// Stack is the running example.
type Stack struct {
	Site      string
	Passwords map[string]string // user name → password
	Dir       string            // logs, static files, Caddy's data

	pg      *testsrv.Postgres
	procs   []*exec.Cmd // in the order they started
	stopped []chan struct{}
}

// dir is examples/django, where this file is.
func dir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(file)
}

// Start starts PostgreSQL, applies every migration (among them
// django_sse_relay's event log), collects the static files, creates the
// Users, and starts gunicorn and Caddy. It returns once the site answers;
// Stop ends it all. On an error what started is stopped again.
func Start(c Config) (_ *Stack, err error) {
	here := dir()
	work, err := os.MkdirTemp("", "sserelay-example-")
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: work, Passwords: map[string]string{}}
	if c.Host == "" {
		c.Host = "localhost"
	}
	defer func() {
		if err != nil {
			s.Stop()
		}
	}()
	if out, err := exec.Command(Python, "-c", "import django, gunicorn, psycopg2").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("the example needs Debian's python3-django, python3-gunicorn and python3-psycopg2 (make example installs them): %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(here, "node_modules/htmx-ext-sse/dist/sse.js")); err != nil {
		return nil, fmt.Errorf("htmx is not installed: npm ci --prefix examples/django (make example does): %v", err)
	}
	caddy, err := filepath.Abs(c.Caddy)
	if err != nil {
		return nil, err
	}
	if s.pg, err = testsrv.StartPostgres(); err != nil {
		return nil, err
	}
	djangoPort, err := testsrv.FreePort()
	if err != nil {
		return nil, err
	}
	django := fmt.Sprintf("127.0.0.1:%d", djangoPort)
	static := filepath.Join(work, "static")
	secret := randomText(32)
	pythonPath := []string{here, filepath.Join(here, "../../contrib/django")}
	if c.PythonPath != "" {
		pythonPath = append([]string{c.PythonPath}, pythonPath...)
	}
	env := append(os.Environ(),
		"PYTHONPATH="+strings.Join(pythonPath, string(os.PathListSeparator)),
		"DJANGO_SETTINGS_MODULE=shop.settings",
		"EXAMPLE_DATABASE_URL="+s.pg.URL(),
		"EXAMPLE_SECRET_KEY="+secret,
		"EXAMPLE_STATIC="+static,
		"EXAMPLE_DJANGO="+django,
		// Caddy's data (its internal CA, with TLS) stays in the stack's
		// directory.
		"HOME="+work, "XDG_DATA_HOME="+work, "XDG_CONFIG_HOME="+work,
	)
	manage := func(stdin string, args ...string) error {
		cmd := exec.Command(Python, append([]string{"manage.py"}, args...)...)
		cmd.Dir, cmd.Env, cmd.Stdin = here, env, strings.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("manage.py %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := manage("", "migrate", "--noinput", "--verbosity", "0"); err != nil {
		return nil, err
	}
	if err := manage("", "collectstatic", "--noinput", "--verbosity", "0"); err != nil {
		return nil, err
	}
	for _, user := range Users {
		s.Passwords[user] = randomText(9)
		if err := manage(s.Passwords[user]+"\n", "adduser", user); err != nil {
			return nil, err
		}
	}

	if err := s.start(env, here, "gunicorn.log", Python, "-m", "gunicorn", "shop.wsgi",
		"--bind", django, "--workers", "2", "--threads", "4", "--access-logfile", "-"); err != nil {
		return nil, err
	}
	if err := s.wait(func() error { return get("http://"+django+"/login/", false) }); err != nil {
		return nil, fmt.Errorf("gunicorn did not start: %v\n%s", err, s.Log("gunicorn.log"))
	}
	for try := 1; ; try++ {
		err := s.startCaddy(c, env, caddy)
		if err == nil || c.Port != 0 || try == 5 || !strings.Contains(err.Error(), "address already in use") {
			return s, err
		}
	}
}

// startCaddy runs Caddy with the example's Caddyfile on c's port, or on a
// free one, and waits until the site answers.
func (s *Stack) startCaddy(c Config, env []string, caddy string) error {
	port, other := c.Port, 0
	var err error
	if port == 0 {
		if port, err = freePort(); err != nil {
			return err
		}
	}
	if other, err = freePort(); err != nil {
		return err
	}
	scheme := "http"
	if c.TLS {
		scheme = "https"
		env = append(env, "EXAMPLE_TLS=tls internal", fmt.Sprintf(
			"EXAMPLE_GLOBAL=http_port %d\n\thttps_port %d\n\tauto_https disable_redirects\n\tskip_install_trust", other, port))
	}
	s.Site = fmt.Sprintf("%s://%s:%d", scheme, c.Host, port)
	env = append(env, "EXAMPLE_SITE="+s.Site)
	if err := s.start(env, dir(), "caddy.log", caddy, "run", "--config", filepath.Join(dir(), "Caddyfile"), "--adapter", "caddyfile"); err != nil {
		return err
	}
	if err := s.wait(func() error { return get(s.Site+"/login/", c.TLS) }); err != nil {
		log := s.Log("caddy.log")
		if s.exited(len(s.procs) - 1) {
			s.procs, s.stopped = s.procs[:len(s.procs)-1], s.stopped[:len(s.stopped)-1]
		}
		return fmt.Errorf("caddy did not start: %v\n%s", err, log)
	}
	return nil
}

// freePort is a TCP port on 127.0.0.1 that was free a moment ago, below
// the kernel's ephemeral range, so that no outgoing connection takes it
// between now and the listen.
func freePort() (int, error) {
	for range 100 {
		n, err := rand.Int(rand.Reader, big.NewInt(32768-20000))
		if err != nil {
			return 0, err
		}
		port := 20000 + int(n.Int64())
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return testsrv.FreePort()
}

// exited says whether the stack's i-th process has ended.
func (s *Stack) exited(i int) bool {
	select {
	case <-s.stopped[i]:
		return true
	default:
		return false
	}
}

// start runs a process of the stack, its output in the named log, in a
// process group of its own: Stop ends them in order, not a terminal's ^C
// all at once.
func (s *Stack) start(env []string, dir, log string, name string, args ...string) error {
	f, err := os.Create(filepath.Join(s.Dir, log))
	if err != nil {
		return err
	}
	cmd := exec.Command(name, args...)
	cmd.Dir, cmd.Env, cmd.Stdout, cmd.Stderr = dir, env, f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	s.procs, s.stopped = append(s.procs, cmd), append(s.stopped, done)
	return nil
}

// wait polls ready until it succeeds, a process of the stack exits, or
// 30 s pass.
func (s *Stack) wait(ready func() error) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		for i, done := range s.stopped {
			select {
			case <-done:
				return fmt.Errorf("%s exited (%v): %v", s.procs[i].Path, s.procs[i].ProcessState, err)
			default:
			}
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get fails unless url answers 200.
func get(url string, insecure bool) error {
	client := &http.Client{Timeout: 2 * time.Second}
	if insecure {
		client.Transport = InsecureTransport()
	}
	resp, err := client.Get(url)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return nil
}

// Log is the text of one of the stack's logs: caddy.log, gunicorn.log.
func (s *Stack) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, name))
	return string(b)
}

// Stop ends Caddy, then gunicorn (SIGTERM, then SIGKILL after 10 s), then
// PostgreSQL, and removes the stack's files.
func (s *Stack) Stop() {
	for i := len(s.procs) - 1; i >= 0; i-- {
		_ = s.procs[i].Process.Signal(syscall.SIGTERM)
		select {
		case <-s.stopped[i]:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.procs[i].Process.Pid, syscall.SIGKILL)
			<-s.stopped[i]
		}
	}
	s.procs, s.stopped = nil, nil
	if s.pg != nil {
		s.pg.Stop()
		s.pg = nil
	}
	_ = os.RemoveAll(s.Dir)
}

func randomText(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// InsecureTransport trusts any certificate, such as one from the internal CA
// of the stack's Caddy.
func InsecureTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	return t
}
