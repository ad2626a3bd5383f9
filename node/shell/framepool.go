package shell

import "sync"

// framePool keeps the buffers of large frames (Config.FrameHint) and of
// large disk reads that the core handed back (Env.Recycle, RecycleSent),
// for the next large frames and reads. A broker reads about a megabyte per
// produce request, and up to tens of megabytes from its logs per fetch:
// allocating each afresh cost zeroing it and, with the collector's pacing,
// touching new memory, where a few buffers recycled serve a producer or a
// consumer at full speed. Bounded in count and bytes; a buffer that does
// not fit is left to the collector.
type framePool struct {
	mu    sync.Mutex
	free  [][]byte
	bytes int
}

const (
	framePoolMax      = 16       // buffers kept
	framePoolMaxBytes = 64 << 20 // bytes kept
)

// get returns a buffer of length n: the smallest kept one that holds n
// bytes, or a new one with room to spare for the next frame, which is
// often a little larger. Small buffers are never taken from the pool.
func (p *framePool) get(n int) []byte {
	if n <= readBufSize {
		return make([]byte, n)
	}
	p.mu.Lock()
	best := -1
	for i, b := range p.free {
		if c := cap(b); c >= n && (best < 0 || c < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.take(best)
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n, n+n/8)
}

func (p *framePool) take(i int) []byte {
	b := p.free[i]
	last := len(p.free) - 1
	p.free[i] = p.free[last]
	p.free[last] = nil
	p.free = p.free[:last]
	p.bytes -= cap(b)
	return b
}

// put keeps b for a later get, if it is a large frame's size, making room
// by dropping smaller kept buffers if need be: frames vary in size (a
// producer's requests carry as many batches as were ready), and small
// buffers kept would make every large frame allocate.
func (p *framePool) put(b []byte) {
	c := cap(b)
	if c <= readBufSize || c > maxDirectFrame+maxDirectFrame/8 || c > framePoolMaxBytes {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.free) >= framePoolMax || p.bytes+c > framePoolMaxBytes {
		small := 0
		for i := range p.free {
			if cap(p.free[i]) < cap(p.free[small]) {
				small = i
			}
		}
		if cap(p.free[small]) >= c {
			return // keep the larger ones
		}
		p.take(small)
	}
	p.free = append(p.free, b[:0])
	p.bytes += c
}
