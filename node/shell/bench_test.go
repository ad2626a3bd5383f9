package shell

import (
	"context"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"herd/node"
)

// echoCore answers every byte it receives with the same bytes.
type echoCore struct{ env node.Env }

func (e *echoCore) Step(ev node.Event) {
	if ev.Kind == node.EvReceived {
		e.env.Send(ev.Conn, ev.Data)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEchoRoundTrip: 32 clients on loopback, each with one 64-byte
// request outstanding, against one shell whose core echoes: the shell's
// per-request cost (reader, loop, writer, syscalls and wake-ups), the
// shape of a keeper read. cpu-us/op counts the whole process, clients too.
// The loop sub-benchmark hands every event to the loop goroutine
// (Config.NoCombining); combining lets the reader step the core.
func BenchmarkEchoRoundTrip(b *testing.B) {
	b.Run("combining", func(b *testing.B) { benchEcho(b, false) })
	b.Run("loop", func(b *testing.B) { benchEcho(b, true) })
}

func benchEcho(b *testing.B, noCombining bool) {
	const clients = 32
	sh, err := New(Config{FS: newMemFS(), Listen: []string{"127.0.0.1:0"}, NoCombining: noCombining}, func(env node.Env) node.Machine { return &echoCore{env: env} })
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	defer func() { cancel(); <-done }()

	conns := make([]net.Conn, clients)
	for i := range conns {
		if conns[i], err = net.Dial("tcp", sh.Addrs()[0]); err != nil {
			b.Fatal(err)
		}
		defer conns[i].Close()
	}
	work := make(chan struct{}, 1024)
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := make([]byte, 64), make([]byte, 64)
			for range work {
				if _, err := c.Write(req); err != nil {
					return
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					return
				}
			}
		}()
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	for range b.N {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N), "cpu-us/op")
}
