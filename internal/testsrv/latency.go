package testsrv

import (
	"net"
	"strconv"
	"sync"
	"time"
)

// LatencyProxy forwards TCP connections to a server, each byte arriving a
// fixed delay after it was sent, in both directions, as a server a few
// milliseconds away would; Cut drops every connection, as a network fault
// would.
type LatencyProxy struct {
	Port   int
	target string
	delay  time.Duration
	l      net.Listener

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// StartLatencyProxy listens on a free port of 127.0.0.1 for target.
func StartLatencyProxy(target string, delay time.Duration) (*LatencyProxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &LatencyProxy{Port: l.Addr().(*net.TCPAddr).Port, target: target, delay: delay, l: l, conns: map[net.Conn]bool{}}
	go p.accept()
	return p, nil
}

// Addr is host:port of the proxy.
func (p *LatencyProxy) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

func (p *LatencyProxy) accept() {
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[s] = true, true
		p.mu.Unlock()
		go p.pipe(c, s)
		go p.pipe(s, c)
	}
}

type chunk struct {
	b  []byte
	at time.Time
}

// pipe copies from → to, each chunk held until delay after it was read.
func (p *LatencyProxy) pipe(from, to net.Conn) {
	queue := make(chan chunk, 4096)
	go func() {
		defer close(queue)
		for {
			b := make([]byte, 32<<10)
			n, err := from.Read(b)
			if n > 0 {
				queue <- chunk{b[:n], time.Now().Add(p.delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		time.Sleep(time.Until(c.at))
		if _, err := to.Write(c.b); err != nil {
			break
		}
	}
	from.Close()
	to.Close()
	p.mu.Lock()
	delete(p.conns, from)
	delete(p.conns, to)
	p.mu.Unlock()
}

// Cut closes every connection through the proxy; new ones are accepted.
func (p *LatencyProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		c.Close()
	}
}

// Close stops the proxy and cuts its connections.
func (p *LatencyProxy) Close() {
	p.l.Close()
	p.Cut()
}
