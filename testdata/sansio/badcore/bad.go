// Package badcore breaks every sans-I/O rule once, so the lint can be shown to
// catch each violation. It is never built into herd.
package badcore

import (
	crand "crypto/rand"
	"math/rand"
	"net"
	"os"
	"sync"
	"time"
)

var mu sync.Mutex

func Bad(m map[string]int) int {
	_ = os.Getenv("HOME")
	_, _ = net.Dial("tcp", "127.0.0.1:1")
	_ = rand.Int()
	_, _ = crand.Read(make([]byte, 1))
	_ = time.Now()
	time.Sleep(time.Millisecond)
	ch := make(chan int)
	go func() { ch <- 1 }()
	select {
	case <-ch:
	case <-time.After(time.Second):
	}
	sum := 0
	for _, v := range m {
		sum += v
	}
	for k := range m { // order-independent: only counts keys
		_ = k
	}
	return sum
}
