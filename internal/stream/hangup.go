package stream

import (
	"net"
	"syscall"
)

// watchHangup calls gone, once, when the client of a taken-over connection
// closes its side or the connection fails, and returns a func that stops
// watching; call it before closing conn. Clients send nothing on an event
// stream, so there is nothing to read, only an end to notice.
//
// Where the platform allows (Linux), one goroutine watches every stream's
// socket through an epoll set of its own; elsewhere, or for a connection
// without a file descriptor, a goroutine per stream blocks in a one-byte
// Read. That goroutine and its stack were a third of an idle stream's cost.
func watchHangup(conn net.Conn, gone func()) (stop func()) {
	if raw := socketOf(conn); raw != nil {
		if stop, ok := hangups.watch(raw, gone); ok {
			return stop
		}
	}
	go readUntilClosed(conn, gone)
	return func() {}
}

// readUntilClosed is the portable watcher: a read only ever returns at the
// end.
func readUntilClosed(conn net.Conn, gone func()) {
	var b [1]byte
	for {
		if _, err := conn.Read(b[:]); err != nil {
			gone()
			return
		}
	}
}

// socketOf is the socket under conn (through TLS and other wrappers that
// expose it), or nil.
func socketOf(conn net.Conn) syscall.RawConn {
	for conn != nil {
		if sc, ok := conn.(syscall.Conn); ok {
			raw, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		}
		inner, ok := conn.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		conn = inner.NetConn()
	}
	return nil
}
