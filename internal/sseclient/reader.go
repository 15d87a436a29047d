// Package sseclient reads Server-Sent Events as the tests and the load
// tool need them: Reader parses a stream's lines into events without a
// goroutine or an allocation per line, and Stream is an open GET whose
// events a test waits for with a timeout.
package sseclient

import (
	"bufio"
	"bytes"
	"io"
)

// Event is one dispatched event.
type Event struct {
	// ID is the id field written within this event, "" when it had none.
	// Unlike EventSource's lastEventId it is not carried over from an
	// earlier event: tests check what the relay wrote on each one.
	ID string
	// Name is the event field; "" means the default, "message".
	Name string
	// Data is the event's data lines joined by "\n".
	Data string
}

// bom is the byte order mark a stream may start with; the spec drops it.
var bom = []byte("\xEF\xBB\xBF")

// Reader splits an event stream into lines and parses them by the field
// rules of the WHATWG HTML standard's "Server-sent events" section.
type Reader struct {
	br      *bufio.Reader
	started bool   // the byte order mark has been looked for
	afterCR bool   // the last line ended in '\r': a '\n' next ends nothing
	long    []byte // a line longer than br's buffer, gathered
	err     error  // the read error that ended the input

	// The event being built.
	data []byte // its data lines, each followed by '\n'
	name string
	id   string
}

// NewReader reads r, through r itself when it is a *bufio.Reader, so the
// caller chooses the buffer size, or through a new one of 4096 bytes.
func NewReader(r io.Reader) *Reader {
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	return &Reader{br: br}
}

// Line returns the next line without its end of line, which may be
// "\r\n", "\n" or "\r". It returns a line as soon as its end is read, so a
// stream whose lines end in "\r" alone is not held up waiting for a
// "\n". The slice is valid until the next call. A line that Line returns
// is not part of any event Next returns later.
//
// At the end of the input Line returns the read error as it is, such as
// io.EOF, and drops a last line that had no end of line, as the spec does.
func (r *Reader) Line() ([]byte, error) {
	r.long = r.long[:0]
	for r.err == nil {
		// What is buffered, or, when nothing is, the next read.
		buf, err := r.br.Peek(max(1, r.br.Buffered()))
		if len(buf) == 0 {
			r.err = err
			break
		}
		if !r.started {
			if len(buf) < len(bom) && bytes.HasPrefix(bom, buf) {
				r.more(len(buf))
				continue
			}
			r.started = true
			if bytes.HasPrefix(buf, bom) {
				r.br.Discard(len(bom))
				continue
			}
		}
		if r.afterCR {
			r.afterCR = false
			if buf[0] == '\n' {
				r.br.Discard(1)
				continue
			}
		}
		end := bytes.IndexByte(buf, '\n')
		if end < 0 {
			end = len(buf)
		}
		if cr := bytes.IndexByte(buf[:end], '\r'); cr >= 0 {
			end = cr
		}
		if end == len(buf) {
			if len(buf) == r.br.Size() {
				r.long = append(r.long, buf...)
				r.br.Discard(len(buf))
			} else {
				r.more(len(buf))
			}
			continue
		}
		line := buf[:end]
		r.afterCR = buf[end] == '\r'
		r.br.Discard(end + 1)
		if len(r.long) > 0 {
			r.long = append(r.long, line...)
			return r.long, nil
		}
		return line, nil
	}
	return nil, r.err
}

// more waits for input beyond the n bytes buffered, which hold no end of
// line.
func (r *Reader) more(n int) {
	if _, err := r.br.Peek(n + 1); err != nil {
		r.err = err
	}
}

// Next returns the next event. At the end of the input it returns the
// read error as Line does, and an event without its blank line is lost.
func (r *Reader) Next() (Event, error) {
	for {
		line, err := r.Line()
		if err != nil {
			return Event{}, err
		}
		if ev, ok := r.parse(line); ok {
			return ev, nil
		}
	}
}

// NextData returns the value of the next data line, skipping every other
// line, with no allocation: the load tool's reader, which needs neither
// event names nor multi-line data. The slice is valid until the next call.
// NextData builds no events, so a Reader serves it or Next, not both.
func (r *Reader) NextData() ([]byte, error) {
	for {
		line, err := r.Line()
		if err != nil {
			return nil, err
		}
		// The name first, so that other lines cost no search for a colon.
		if len(line) >= 4 && string(line[:4]) == "data" {
			if name, value := field(line); len(name) == 4 {
				return value, nil
			}
		}
	}
}

// parse applies one line to the event being built and returns the event
// when line is the blank line that dispatches it.
func (r *Reader) parse(line []byte) (Event, bool) {
	if len(line) == 0 {
		// A blank line after no data line dispatches nothing, but still
		// ends the event: its name and id do not reach the next one.
		ev := Event{ID: r.id, Name: r.name}
		ok := len(r.data) > 0
		if ok {
			ev.Data = string(r.data[:len(r.data)-1])
		}
		r.data, r.name, r.id = r.data[:0], "", ""
		return ev, ok
	}
	name, value := field(line)
	switch string(name) {
	case "data":
		r.data = append(append(r.data, value...), '\n')
	case "event":
		r.name = string(value)
	case "id":
		// The spec ignores an id with a NUL in it.
		if bytes.IndexByte(value, 0) < 0 {
			r.id = string(value)
		}
	}
	// Comments (an empty name), retry and unknown fields change no event.
	return Event{}, false
}

// field splits a line at its first colon into a field name and a value
// without the one space that may follow the colon. A line without a colon
// is a name with an empty value; a comment has an empty name.
func field(line []byte) (name, value []byte) {
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return line, nil
	}
	value = line[i+1:]
	if len(value) > 0 && value[0] == ' ' {
		value = value[1:]
	}
	return line[:i], value
}
