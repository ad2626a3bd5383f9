package main

import "testing"

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
		// A large one grows by half of what is live.
		{"large", 1000 * mib, 1400 * mib, 1300 * mib, 0, 1000*mib + 100*mib + 500*mib},
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
