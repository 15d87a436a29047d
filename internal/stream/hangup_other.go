//go:build !linux

package stream

import "syscall"

// hangupSet has no shared watcher off Linux: every stream reads its own
// connection.
type hangupSet struct{}

var hangups hangupSet

func (hangupSet) watch(syscall.RawConn, func()) (func(), bool) { return nil, false }
