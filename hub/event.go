// Package hub fans events out from one broker connection to many
// subscribers. It decodes each payload once, encodes the SSE frame once and
// offers the same bytes to every subscriber's bounded queue. It knows nothing
// of Caddy or of brokers.
package hub

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Event is one Server-Sent Event as a publisher described it.
type Event struct {
	ID      string
	Name    string // the SSE "event:" field
	Data    string
	HasData bool // whether the event carries data lines (and so dispatches in the browser)
	Retry   int  // milliseconds; -1 when not set
	Comment string
}

// ErrRefused is wrapped by every error Decode returns for a payload that must
// not be written to a stream.
var ErrRefused = errors.New("payload refused")

// RefusedError says why a payload was refused; Reason is a short, fixed
// string fit for a metric label.
type RefusedError struct {
	Reason string
}

func (e *RefusedError) Error() string { return "payload refused: " + e.Reason }

// Unwrap lets callers test with errors.Is(err, ErrRefused).
func (e *RefusedError) Unwrap() error { return ErrRefused }

// payloadFields are the keys the payload contract knows; others are ignored.
type payloadFields struct {
	Event   json.RawMessage `json:"event"`
	ID      json.RawMessage `json:"id"`
	Data    json.RawMessage `json:"data"`
	Retry   json.RawMessage `json:"retry"`
	Comment json.RawMessage `json:"comment"`
}

// Decode turns a publisher's payload into an Event. A JSON object is read
// for the fields event, id, data, retry and comment; anything else is the
// data of an unnamed event. It refuses an event or id that would break out of
// its SSE field (CR, LF or NUL), a retry that is not a non-negative
// integer, and the event name ResetEvent, which is the relay's own: a
// publisher's reset would send every subscriber of the channel back to
// refetch its state at once.
func Decode(payload []byte) (Event, error) {
	ev := Event{Retry: -1}
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return rawEvent(payload), nil
	}
	var f payloadFields
	if err := json.Unmarshal(trimmed, &f); err != nil {
		return rawEvent(payload), nil
	}
	var err error
	if ev.Name, err = scalarField(f.Event, "event"); err != nil {
		return Event{}, err
	}
	if ev.Name == ResetEvent {
		return Event{}, &RefusedError{Reason: "reserved event name"}
	}
	if ev.ID, err = scalarField(f.ID, "id"); err != nil {
		return Event{}, err
	}
	if ev.Comment, err = textField(f.Comment, "comment"); err != nil {
		return Event{}, err
	}
	if len(f.Retry) > 0 && string(f.Retry) != "null" {
		n, convErr := strconv.Atoi(string(f.Retry))
		if convErr != nil || n < 0 {
			return Event{}, &RefusedError{Reason: "bad retry"}
		}
		ev.Retry = n
	}
	if len(f.Data) > 0 {
		ev.HasData = true
		var s string
		if f.Data[0] == '"' && json.Unmarshal(f.Data, &s) == nil {
			ev.Data = s
		} else {
			var buf bytes.Buffer
			if err := json.Compact(&buf, f.Data); err != nil {
				return Event{}, &RefusedError{Reason: "bad data"}
			}
			ev.Data = buf.String()
		}
	}
	if ev.Name != "" || ev.ID != "" {
		ev.HasData = true
	}
	return ev, nil
}

func rawEvent(payload []byte) Event {
	return Event{Data: string(payload), HasData: true, Retry: -1}
}

// scalarField reads a string or number that must fit on one SSE line.
func scalarField(raw json.RawMessage, name string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	switch raw[0] {
	case '"':
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", &RefusedError{Reason: "bad " + name}
		}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		s = string(raw)
	default:
		return "", &RefusedError{Reason: "bad " + name}
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return "", &RefusedError{Reason: name + " has control characters"}
	}
	return s, nil
}

// textField reads a string that may span lines (a comment).
func textField(raw json.RawMessage, name string) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &RefusedError{Reason: fmt.Sprintf("bad %s", name)}
	}
	return s, nil
}

// AppendFrame appends the SSE wire form of ev to dst. Multi-line data and
// comments become one field line per line, so no input can start a field of
// its own; the frame ends with the blank line that dispatches it.
func (ev *Event) AppendFrame(dst []byte) []byte {
	if ev.Comment != "" {
		dst = appendLines(dst, ": ", ev.Comment)
	}
	if ev.ID != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, ev.ID...)
		dst = append(dst, '\n')
	}
	if ev.Name != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, ev.Name...)
		dst = append(dst, '\n')
	}
	if ev.Retry >= 0 {
		dst = append(dst, "retry: "...)
		dst = strconv.AppendInt(dst, int64(ev.Retry), 10)
		dst = append(dst, '\n')
	}
	if ev.HasData {
		dst = appendLines(dst, "data: ", ev.Data)
	}
	if len(dst) == 0 || dst[len(dst)-1] != '\n' {
		// Nothing at all to say: a bare comment keeps the frame well formed.
		dst = append(dst, ":\n"...)
	}
	return append(dst, '\n')
}

// appendLines writes s as one prefixed line per line, splitting on CRLF, CR
// and LF, the three line ends of the SSE grammar.
func appendLines(dst []byte, prefix, s string) []byte {
	for {
		i := strings.IndexAny(s, "\r\n")
		dst = append(dst, prefix...)
		if i < 0 {
			dst = append(dst, s...)
			return append(dst, '\n')
		}
		dst = append(dst, s[:i]...)
		dst = append(dst, '\n')
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			i++
		}
		s = s[i+1:]
	}
}
