//go:build linux

package stream

import (
	"sync"
	"syscall"
	"time"
)

// epoll flags the syscall package spells as negative ints or not at all.
const (
	epollRDHUP   = 0x2000
	epollONESHOT = 1 << 30
)

// hangupSet is one epoll set, and one goroutine, for the hang-ups of every
// taken-over stream of the process. Each registration carries an id of its
// own, so a late event for a closed socket whose number was reused finds
// nothing.
type hangupSet struct {
	once sync.Once
	epfd int
	err  error

	mu   sync.Mutex
	next uint64
	gone map[uint64]func()
}

var hangups hangupSet

func (h *hangupSet) start() {
	h.epfd, h.err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if h.err == nil {
		h.gone = make(map[uint64]func())
		go h.run()
	}
}

// watch registers the socket under raw; gone is called when its peer
// hangs up. It reports false when the socket cannot be watched this way.
func (h *hangupSet) watch(raw syscall.RawConn, gone func()) (func(), bool) {
	h.once.Do(h.start)
	if h.err != nil {
		return nil, false
	}
	h.mu.Lock()
	h.next++
	id := h.next
	h.gone[id] = gone
	h.mu.Unlock()
	forget := func() {
		h.mu.Lock()
		delete(h.gone, id)
		h.mu.Unlock()
	}

	// Hang-up, error and peer shutdown are all an end; one event is all a
	// stream needs, so the registration fires once.
	ev := syscall.EpollEvent{Events: epollRDHUP | syscall.EPOLLHUP | syscall.EPOLLERR | epollONESHOT,
		Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	var ctlErr error
	if err := raw.Control(func(fd uintptr) {
		ctlErr = syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); err != nil || ctlErr != nil {
		forget()
		return nil, false
	}
	return func() {
		_ = raw.Control(func(fd uintptr) {
			_ = syscall.EpollCtl(h.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
		})
		forget()
	}, true
}

func (h *hangupSet) run() {
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(h.epfd, events, -1)
		if err != nil {
			if err != syscall.EINTR {
				time.Sleep(10 * time.Millisecond) // never spin on a failing wait
			}
			continue
		}
		h.mu.Lock()
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if gone, ok := h.gone[id]; ok {
				delete(h.gone, id)
				gone() // a kick: it does not block
			}
		}
		h.mu.Unlock()
	}
}
