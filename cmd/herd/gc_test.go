package main

import (
	"testing"
	"time"
)

func TestGCMemoryLimit(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		name                        string
		live, total, heap, released int64
		want                        int64
	}{
		// A small heap gets the minimum headroom over live heap and
		// what is outside the heap.
		{"small", 10 * mib, 60 * mib, 40 * mib, 0, 10*mib + 20*mib + gcMinHeadroom},
		// A large one grows by a quarter of what is live.
		{"large", 1000 * mib, 1200 * mib, 1100 * mib, 0, 1000*mib + 100*mib + 250*mib},
		// In between the headroom falls from the minimum to half of it.
		{"a million znodes", 256 * mib, 320 * mib, 290 * mib, 0, 256*mib + 30*mib + gcMinHeadroom/2},
		// Free heap memory (here mostly released) is not overhead.
		{"free heap", 100 * mib, 400 * mib, 380 * mib, 280 * mib, 100*mib + 20*mib + gcMinHeadroom},
		// The tree shrank: the process holds more than the formula's
		// limit, and the limit stays at what it holds, so that no
		// allocation waits for memory to go back to the OS.
		{"shrunk", 50 * mib, 400 * mib, 370 * mib, 30 * mib, 370 * mib},
		// Memory already released does not hold the limit up.
		{"shrunk, released", 50 * mib, 400 * mib, 370 * mib, 300 * mib, 50*mib + 30*mib + gcMinHeadroom},
	} {
		if got := gcMemoryLimit(c.live, c.total, c.heap, c.released); got != c.want {
			t.Errorf("%s: gcMemoryLimit(%d, %d, %d, %d) = %d MiB, want %d MiB", c.name, c.live/mib, c.total/mib, c.heap/mib, c.released/mib, got/mib, c.want/mib)
		}
	}
}

func TestGCHeadroom(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct{ live, want int64 }{
		{0, gcMinHeadroom},
		{100 * mib, gcMinHeadroom},
		{128 * mib, gcMinHeadroom},
		{192 * mib, 96 * mib},
		{256 * mib, 64 * mib},
		{400 * mib, 100 * mib},
		{4096 * mib, 1024 * mib},
	} {
		if got := gcHeadroom(c.live); got != c.want {
			t.Errorf("gcHeadroom(%d MiB) = %d MiB, want %d MiB", c.live/mib, got/mib, c.want/mib)
		}
	}
	// The heap goal (live + headroom) never falls as live grows, or a
	// bigger tree would be collected before a smaller one.
	prev := int64(0)
	for live := int64(0); live <= 2048*mib; live += mib / 2 {
		if g := live + gcHeadroom(live); g < prev {
			t.Fatalf("live %d MiB: goal %d < %d", live/mib, g, prev)
		} else {
			prev = g
		}
	}
}

// trimAfterRecovery makes the running trimmer collect and return memory at
// once (no quiet minute); without a trimmer it does nothing and does not
// block, and asking twice at once queues one trim.
func TestTrimAfterRecovery(t *testing.T) {
	trimAfterRecovery() // no trimmer: nothing to wake, must not block
	stop := startHeapTrim()
	defer stop()
	before := gcCycles()
	trimAfterRecovery()
	trimAfterRecovery()
	deadline := time.Now().Add(10 * time.Second)
	for gcCycles() == before {
		if time.Now().After(deadline) {
			t.Fatal("no collection within 10 s of trimAfterRecovery")
		}
		time.Sleep(time.Millisecond)
	}
}
