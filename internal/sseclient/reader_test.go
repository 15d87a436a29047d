package sseclient

import (
	"bufio"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestNext: the spec's field rules, each on a stream that ends, so the
// events read are all there are.
func TestNext(t *testing.T) {
	long := strings.Repeat("x", 100) // longer than the 16-byte buffer below
	for _, c := range []struct {
		name, in string
		want     []Event
	}{
		{"one event", "data: hello\n\n", []Event{{Data: "hello"}}},
		{"id and name", "id: 7\nevent: order\ndata: x\n\n", []Event{{ID: "7", Name: "order", Data: "x"}}},
		{"multi-line data joined by LF", "data: a\ndata: b\ndata: c\n\n", []Event{{Data: "a\nb\nc"}}},
		{"one space stripped, not two", "data:  two\n\n", []Event{{Data: " two"}}},
		{"no space after the colon", "data:tight\n\n", []Event{{Data: "tight"}}},
		{"a colon in the value stays", "data: a: b\n\n", []Event{{Data: "a: b"}}},
		{"a name without a colon has an empty value", "data\n\n", []Event{{Data: ""}}},
		{"empty data lines count", "data:\ndata:\n\n", []Event{{Data: "\n"}}},
		{"comments are skipped", ": ok\ndata: x\n:\n: more\n\n", []Event{{Data: "x"}}},
		{"a blank line without data dispatches nothing", ": ok\n\n\n\ndata: x\n\n", []Event{{Data: "x"}}},
		{"a blank line ends the name and id of an event without data",
			"event: ping\nid: 1\n\ndata: x\n\n", []Event{{Data: "x"}}},
		{"name and id belong to their own event", "id: 1\nevent: a\ndata: x\n\ndata: y\n\n",
			[]Event{{ID: "1", Name: "a", Data: "x"}, {Data: "y"}}},
		{"the last id and name in an event win", "id: 1\nid: 2\nevent: a\nevent: b\ndata: x\n\n",
			[]Event{{ID: "2", Name: "b", Data: "x"}}},
		{"an id with a NUL is ignored", "id: 1\nid: 2\x003\ndata: x\n\n", []Event{{ID: "1", Data: "x"}}},
		{"retry and unknown fields change no event", "retry: 1500\ncolor: red\ndata: x\n\n", []Event{{Data: "x"}}},
		{"field names are case-sensitive", "Data: x\ndata: y\n\n", []Event{{Data: "y"}}},
		{"CRLF ends lines", "event: a\r\ndata: x\r\ndata: y\r\n\r\n", []Event{{Name: "a", Data: "x\ny"}}},
		{"CR alone ends lines", "event: a\rdata: x\rdata: y\r\rdata: z\r\r", []Event{{Name: "a", Data: "x\ny"}, {Data: "z"}}},
		{"line ends mixed", "data: a\r\ndata: b\rdata: c\n\r\n", []Event{{Data: "a\nb\nc"}}},
		{"a leading byte order mark is dropped", "\xEF\xBB\xBFdata: x\n\n", []Event{{Data: "x"}}},
		{"a byte order mark later is data", "data: \xEF\xBB\xBFx\n\n", []Event{{Data: "\xEF\xBB\xBFx"}}},
		{"a line longer than the buffer", "id: " + long + "\ndata: " + long + "\r\ndata: " + long + "\n\n",
			[]Event{{ID: long, Data: long + "\n" + long}}},
		{"an event without its blank line is lost", "data: x\n\ndata: y\n", []Event{{Data: "x"}}},
		{"a last line without its end is lost", "data: x\n\ndata: y", []Event{{Data: "x"}}},
		{"nothing", "", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bufio.NewReaderSize(strings.NewReader(c.in), 16))
			var got []Event
			for {
				ev, err := r.Next()
				if err != nil {
					if err != io.EOF {
						t.Fatalf("error %v, want io.EOF as it is", err)
					}
					break
				}
				got = append(got, ev)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

// TestNextData: the load tool's reader gets each data line's value, by the
// same field rules, and nothing else.
func TestNextData(t *testing.T) {
	long := strings.Repeat("y", 100)
	for _, c := range []struct {
		name, in string
		want     []string
	}{
		{"data lines of every event", ": ok\n\ndata: 1 100\n\ndata: 2 200\n\n", []string{"1 100", "2 200"}},
		{"each line of multi-line data", "data: a\ndata: b\n\n", []string{"a", "b"}},
		{"other fields and comments skipped", "id: 1\nevent: e\nretry: 5\n: data: no\ndata: x\n\n", []string{"x"}},
		{"one space stripped", "data:x\ndata:  y\ndata\n", []string{"x", " y", ""}},
		{"CR and CRLF", "data: a\rdata: b\r\ndata: c\n", []string{"a", "b", "c"}},
		{"a line longer than the buffer", "data: " + long + "\ndata: z\n", []string{long, "z"}},
		{"a last line without its end is lost", "data: a\ndata: b", []string{"a"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bufio.NewReaderSize(strings.NewReader(c.in), 16))
			var got []string
			for {
				d, err := r.NextData()
				if err != nil {
					if err != io.EOF {
						t.Fatalf("error %v, want io.EOF as it is", err)
					}
					break
				}
				got = append(got, string(d))
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

// TestLine: lines come without their ends, and a read error other than
// io.EOF comes back as it is, after the lines before it.
func TestLine(t *testing.T) {
	broken := errors.New("connection reset")
	r := NewReader(io.MultiReader(strings.NewReader("\xEF\xBB\xBF: ok\r\n\rdata: x\n"), errReader{broken}))
	var got []string
	for {
		line, err := r.Line()
		if err != nil {
			if err != broken {
				t.Fatalf("error %v, want %v", err, broken)
			}
			break
		}
		got = append(got, string(line))
	}
	if want := []string{": ok", "", "data: x"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if _, err := r.Line(); err != broken {
		t.Fatalf("after the end: %v, want %v again", err, broken)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// TestLineEndsAtCR: a line ending in "\r" alone is returned without
// waiting for the byte after it, so a stream with CR line ends is not
// held up until its next event.
func TestLineEndsAtCR(t *testing.T) {
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("data: x\r\r"))
	got := make(chan Event, 1)
	go func() {
		if ev, err := NewReader(pr).Next(); err == nil {
			got <- ev
		}
	}()
	select {
	case ev := <-got:
		if ev.Data != "x" {
			t.Fatalf("got %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event ended by CR CR was not returned")
	}
}

// TestNextDataAllocates: the load tool reads a data line without an
// allocation, as it did with bufio.Reader.ReadSlice alone.
func TestNextDataAllocates(t *testing.T) {
	r := NewReader(bufio.NewReaderSize(&endless{s: "data: 17 1700000000000000000\n\n: heartbeat\n"}, 4096))
	if n := testing.AllocsPerRun(10000, func() {
		if d, err := r.NextData(); err != nil || string(d) != "17 1700000000000000000" {
			t.Fatalf("%q, %v", d, err)
		}
	}); n != 0 {
		t.Fatalf("%v allocations per data line, want 0", n)
	}
}

// endless repeats s forever.
type endless struct {
	s   string
	off int
}

func (e *endless) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], e.s[e.off:])
		n += c
		e.off = (e.off + c) % len(e.s)
	}
	return n, nil
}

// BenchmarkNextData compares the load tool's reader with the bare
// bufio.Reader.ReadSlice loop it replaced.
func BenchmarkNextData(b *testing.B) {
	const stream = "data: 17 1700000000000000000\n\n: heartbeat\n"
	b.Run("NextData", func(b *testing.B) {
		r := NewReader(bufio.NewReaderSize(&endless{s: stream}, 4096))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := r.NextData(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ReadSlice", func(b *testing.B) {
		br := bufio.NewReaderSize(&endless{s: stream}, 4096)
		b.ReportAllocs()
		for b.Loop() {
			for {
				line, err := br.ReadSlice('\n')
				if err != nil {
					b.Fatal(err)
				}
				if len(line) > 6 && string(line[:6]) == "data: " {
					break
				}
			}
		}
	})
}
