package shell

import "sync"

// framePool keeps the buffers of large frames (Config.FrameHint) that the
// core handed back (Env.Recycle), for the next large frames to be read
// into. A broker reads about a megabyte per produce request: allocating
// each afresh cost zeroing it and, with the collector's pacing, touching
// new memory, where a few buffers recycled serve a producer at full speed.
// Bounded in count and bytes; a buffer that does not fit is left to the
// collector.
type framePool struct {
	mu    sync.Mutex
	free  [][]byte
	bytes int
}

const (
	framePoolMax      = 16       // buffers kept
	framePoolMaxBytes = 64 << 20 // bytes kept
)

// get returns a buffer of length n: a kept one whose capacity is at least
// n and at most twice n (the smallest such), or a new one with room to
// spare for the next frame, which is often a little larger.
func (p *framePool) get(n int) []byte {
	p.mu.Lock()
	best := -1
	for i, b := range p.free {
		if c := cap(b); c >= n && c <= 2*n && (best < 0 || c < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		last := len(p.free) - 1
		p.free[best] = p.free[last]
		p.free[last] = nil
		p.free = p.free[:last]
		p.bytes -= cap(b)
		p.mu.Unlock()
		return b[:n]
	}
	p.mu.Unlock()
	return make([]byte, n, n+n/8)
}

// put keeps b for a later get, if it is a large frame's size and there is
// room.
func (p *framePool) put(b []byte) {
	c := cap(b)
	if c <= readBufSize || c > maxDirectFrame+maxDirectFrame/8 {
		return
	}
	p.mu.Lock()
	if len(p.free) < framePoolMax && p.bytes+c <= framePoolMaxBytes {
		p.free = append(p.free, b[:0])
		p.bytes += c
	}
	p.mu.Unlock()
}
