// Command example runs examples/django on http://localhost:8080 until ^C:
// a throw-away PostgreSQL, the Django project under gunicorn and Caddy with
// the example's Caddyfile. `make example` builds Caddy and runs it.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	example "github.com/sse-relay/caddy-sse-relay/examples/django"
)

func main() {
	caddy := flag.String("caddy", "bin/caddy", "the Caddy binary built from cmd/caddy")
	host := flag.String("host", "localhost", "the site's host")
	port := flag.Int("port", 8080, "the site's port")
	flag.Parse()
	stack, err := example.Start(example.Config{Caddy: *caddy, Host: *host, Port: *port})
	if err != nil {
		fmt.Fprintln(os.Stderr, "example:", err)
		os.Exit(1)
	}
	fmt.Printf("\nThe example runs on %s (logs in %s).\n\n", stack.Site, stack.Dir)
	for _, user := range example.Users {
		fmt.Printf("  sign in as %-5s with password %s\n", user, stack.Passwords[user])
	}
	fmt.Printf("\nSign in as alice in one browser and as bob in another (or a private window):\n" +
		"an order either creates shows in both lists at once; a message reaches its recipient only.\n" +
		"Ctrl-C stops it all and removes the database.\n")
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	fmt.Println("\nstopping")
	stack.Stop()
}
