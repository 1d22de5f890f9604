// Line echo as the Go tutorial builds it: a peer of reactor-echo in
// `make bench-compare`, built only when `go` is installed.
//
//	go build -o go-echo . && ./go-echo 127.0.0.1:7003
//
// One goroutine per connection, bufio's ReadString('\n'), and one Write per
// line: the tutorial's code as it stands, kept as it stands on purpose.
// Unlike the Rust peers it does not write all the complete lines of a read
// in one write, so with 16 lines in flight (pipelined) it makes up to 16
// writes where they make one: it is measured as "what the tutorial
// teaches", not as the fastest Go server. The Go runtime runs goroutines
// on GOMAXPROCS threads, by default the CPUs it is pinned to (taskset).
// SIGTERM ends it at once.
package main

import (
	"bufio"
	"net"
	"os"
)

func handle(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		msg, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(msg)); err != nil {
			return
		}
	}
}

func main() {
	addr := "127.0.0.1:7003"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			continue
		}
		go handle(c)
	}
}
