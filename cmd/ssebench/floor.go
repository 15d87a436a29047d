package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
)

// floor is the machine's floor: a fan-out server with no framework. It
// answers GET with a chunked event stream and POST /publish by framing
// the body once and writing it to every socket in a loop.
type floor struct {
	mu    sync.Mutex
	conns []net.Conn
}

func serveFloor(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("floor listening on", ln.Addr())
	f := &floor{}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go f.handle(c)
	}
}

func (f *floor) handle(c net.Conn) {
	br := bufio.NewReaderSize(c, 1024)
	line, err := br.ReadString('\n')
	if err != nil {
		c.Close()
		return
	}
	length := 0
	for {
		h, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return
		}
		if h == "\r\n" {
			break
		}
		if k, v, ok := strings.Cut(h, ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if strings.HasPrefix(line, "POST") {
		body := make([]byte, length)
		if _, err := io.ReadFull(br, body); err != nil {
			c.Close()
			return
		}
		f.publish(body)
		c.Write([]byte("HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n"))
		go f.handle(c) // keep-alive for the publisher
		return
	}
	const hdr = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
	if _, err := c.Write([]byte(hdr + chunk([]byte(": ok\n\n")))); err != nil {
		c.Close()
		return
	}
	f.mu.Lock()
	f.conns = append(f.conns, c)
	f.mu.Unlock()
}

// payloadData is the "data" of a publish body as the load tool sends it,
// {"data":"<n> <nanos>"}, or the body when it has none.
func payloadData(body []byte) []byte {
	i := bytes.Index(body, []byte(`"data":"`))
	if i < 0 {
		return body
	}
	rest := body[i+8:]
	return rest[:bytes.IndexByte(rest, '"')]
}

func chunk(p []byte) string {
	return strconv.FormatInt(int64(len(p)), 16) + "\r\n" + string(p) + "\r\n"
}

// publish frames a payload's data once and writes it to every socket.
func (f *floor) publish(body []byte) {
	frame := []byte(chunk([]byte("data: " + string(payloadData(body)) + "\n\n")))
	f.mu.Lock()
	conns := f.conns
	f.mu.Unlock()
	for _, c := range conns {
		c.Write(frame)
	}
}
