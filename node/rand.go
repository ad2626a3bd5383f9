package node

import (
	"math/bits"
	"time"
)

// Source is a stream of uniformly distributed 64-bit values. math/rand/v2's
// PCG and ChaCha8 satisfy it; the shell picks and seeds one, so core packages
// never import a random-number package themselves.
type Source interface {
	Uint64() uint64
}

// Rand draws the values cores need from a Source.
type Rand struct{ src Source }

// NewRand wraps src.
func NewRand(src Source) *Rand { return &Rand{src: src} }

// Uint64 returns a uniform 64-bit value.
func (r *Rand) Uint64() uint64 { return r.src.Uint64() }

// Uint64N returns a uniform value in [0, n). It panics if n is 0.
func (r *Rand) Uint64N(n uint64) uint64 {
	if n == 0 {
		panic("node.Rand: Uint64N(0)")
	}
	// Lemire's nearly-divisionless method: unbiased, one multiply in the
	// common case.
	hi, lo := bits.Mul64(r.src.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(r.src.Uint64(), n)
		}
	}
	return hi
}

// IntN returns a uniform value in [0, n). It panics if n <= 0.
func (r *Rand) IntN(n int) int {
	if n <= 0 {
		panic("node.Rand: IntN of a non-positive bound")
	}
	return int(r.Uint64N(uint64(n)))
}

// Float64 returns a uniform value in [0, 1).
func (r *Rand) Float64() float64 { return float64(r.src.Uint64()>>11) / (1 << 53) }

// Chance returns true with probability p.
func (r *Rand) Chance(p float64) bool { return p > 0 && r.Float64() < p }

// Between returns a uniform duration in [lo, hi]. Randomised timeouts
// (election, backoff) come from here.
func (r *Rand) Between(lo, hi time.Duration) time.Duration {
	if hi <= lo {
		return lo
	}
	return lo + time.Duration(r.Uint64N(uint64(hi-lo)+1))
}

// Shuffle permutes n elements with swap, uniformly (Fisher-Yates).
func (r *Rand) Shuffle(n int, swap func(i, j int)) {
	for i := n - 1; i > 0; i-- {
		swap(i, r.IntN(i+1))
	}
}
