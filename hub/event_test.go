package hub

import (
	"errors"
	"strings"
	"testing"
)

func frame(t *testing.T, payload string) string {
	t.Helper()
	ev, err := Decode([]byte(payload))
	if err != nil {
		t.Fatalf("Decode(%q): %v", payload, err)
	}
	return string(ev.AppendFrame(nil))
}

func TestDecodeEncode(t *testing.T) {
	cases := []struct{ name, payload, want string }{
		{"all fields", `{"event":"order","id":"7","data":"hello","retry":3000,"comment":"c"}`,
			": c\nid: 7\nevent: order\nretry: 3000\ndata: hello\n\n"},
		{"multi-line data", `{"data":"a\nb\r\nc\rd"}`, "data: a\ndata: b\ndata: c\ndata: d\n\n"},
		{"json data", `{"data":{"b": [1, 2], "a": "x"}}`, "data: {\"b\":[1,2],\"a\":\"x\"}\n\n"},
		{"numeric id as in sse-relay-server", `{"event":"NEW","id":1,"data":"{}"}`, "id: 1\nevent: NEW\ndata: {}\n\n"},
		{"raw text", `plain text`, "data: plain text\n\n"},
		{"raw multi-line", "line1\nline2", "data: line1\ndata: line2\n\n"},
		{"array is raw", `[1,2]`, "data: [1,2]\n\n"},
		{"broken json is raw", `{"data":`, "data: {\"data\":\n\n"},
		{"unknown keys ignored", `{"data":"x","color":"red"}`, "data: x\n\n"},
		{"event without data", `{"event":"ping"}`, "event: ping\ndata: \n\n"},
		{"comment only", `{"comment":"just a comment"}`, ": just a comment\n\n"},
		{"empty object", `{}`, ":\n\n"},
		{"empty payload", ``, "data: \n\n"},
		{"null data", `{"data":null}`, "data: null\n\n"},
		{"multi-line comment", `{"comment":"a\nb"}`, ": a\n: b\n\n"},
		{"only the reset's exact name is reserved", `{"event":"SSE-RELAY-RESET"}`, "event: SSE-RELAY-RESET\ndata: \n\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := frame(t, c.payload); got != c.want {
				t.Fatalf("frame = %q, want %q", got, c.want)
			}
		})
	}
}

// TestDecodeRefusesInjection: payloads that would inject a field, carry
// a bad retry, or pass for the relay's own reset event are refused.
func TestDecodeRefusesInjection(t *testing.T) {
	for _, p := range []string{
		`{"event":"a\nid: 99","data":"x"}`,
		`{"event":"a\rb","data":"x"}`,
		`{"id":"1\u0000","data":"x"}`,
		`{"id":"1\ndata: evil","data":"x"}`,
		`{"retry":"soon","data":"x"}`,
		`{"retry":-5,"data":"x"}`,
		`{"retry":1.5,"data":"x"}`,
		`{"event":{"nested":true},"data":"x"}`,
		`{"event":"sse-relay-reset","data":"{\"channels\":[\"c\"],\"reason\":\"unknown-id\"}"}`,
		`{"event":"sse-relay-\u0072eset"}`,
	} {
		_, err := Decode([]byte(p))
		if !errors.Is(err, ErrRefused) {
			t.Errorf("Decode(%q) = %v, want refusal", p, err)
		}
	}
}

// FuzzDecodeEncode asserts a frame is well formed and never carries a
// field the payload did not set.
func FuzzDecodeEncode(f *testing.F) {
	for _, s := range []string{`{"event":"e","id":"1","data":"d","retry":5,"comment":"c"}`, "a\nb", `{"data":{"x":1}}`, "", `{"event":"a\nb"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		ev, err := Decode(payload)
		if err != nil {
			return
		}
		fr := string(ev.AppendFrame(nil))
		if !strings.HasSuffix(fr, "\n\n") {
			t.Fatalf("frame %q does not end with a blank line", fr)
		}
		body := strings.TrimSuffix(fr, "\n\n")
		for _, line := range strings.Split(body, "\n") {
			if line == "" || strings.ContainsRune(line, '\r') {
				t.Fatalf("frame %q has a blank or CR line inside", fr)
			}
			field, _, _ := strings.Cut(line, ":")
			switch field {
			case "":
				if ev.Comment == "" && line != ":" {
					t.Fatalf("comment line %q without a comment", line)
				}
			case "data":
				if !ev.HasData {
					t.Fatalf("data line without data in %q", fr)
				}
			case "id":
				if ev.ID == "" || line != "id: "+ev.ID {
					t.Fatalf("id line %q for id %q", line, ev.ID)
				}
			case "event":
				if ev.Name == "" || ev.Name == ResetEvent || line != "event: "+ev.Name {
					t.Fatalf("event line %q for event %q", line, ev.Name)
				}
			case "retry":
				if ev.Retry < 0 {
					t.Fatalf("retry line without retry in %q", fr)
				}
			default:
				t.Fatalf("frame %q has a field %q the payload did not set", fr, field)
			}
		}
	})
}
