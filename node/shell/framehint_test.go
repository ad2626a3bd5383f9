package shell

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"

	"herd/node"
)

// TestFrameHint: with Config.FrameHint the bytes still arrive exactly as
// sent, frames longer than the read buffer arrive whole as one Data each,
// and a stream that breaks the hint is delivered anyway.
func TestFrameHint(t *testing.T) {
	leakCheck(t)
	r := start(t, Config{FrameHint: 32 << 20}, nil)
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	acc := r.waitKind(t, node.EvAccepted)

	rng := rand.New(rand.NewPCG(1, 2))
	noise := make([]byte, 8192)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	var sent []byte
	big := map[int]bool{} // offsets of frames longer than the read buffer
	for i := 0; i < 40; i++ {
		var n int
		switch rng.IntN(3) {
		case 0:
			n = rng.IntN(200)
		case 1:
			n = rng.IntN(3 * readBufSize)
		default:
			n = readBufSize + 1 + rng.IntN(2<<20)
		}
		if 4+n > readBufSize {
			big[len(sent)] = true
		}
		f := make([]byte, 4+n)
		binary.BigEndian.PutUint32(f, uint32(n))
		for j := 4; j < len(f); j += len(noise) {
			copy(f[j:], noise[rng.IntN(len(noise)/2):])
		}
		sent = append(sent, f...)
	}
	// A frame over maxDirectFrame passes through as it comes; the frames
	// after it are read whole again.
	huge := make([]byte, 4+maxDirectFrame+10)
	binary.BigEndian.PutUint32(huge, uint32(len(huge)-4))
	sent = append(sent, huge...)
	for i := 0; i < 3; i++ {
		n := readBufSize + 1 + rng.IntN(1<<20)
		big[len(sent)] = true
		f := make([]byte, 4+n)
		binary.BigEndian.PutUint32(f, uint32(n))
		f[len(f)-1] = byte(i + 1)
		sent = append(sent, f...)
	}
	// A frame over the hint turns it off: the rest still arrives.
	tail := make([]byte, 4+1000)
	binary.BigEndian.PutUint32(tail, 33<<20)
	sent = append(sent, tail...)
	errc := make(chan error, 1)
	go func() {
		// Odd write sizes, so frames straddle the reads.
		rest := sent
		for len(rest) > 0 {
			n := min(len(rest), 1+rng.IntN(300_000))
			if _, err := nc.Write(rest[:n]); err != nil {
				errc <- err
				return
			}
			rest = rest[n:]
		}
		errc <- nil
	}()
	var got []byte
	for len(got) < len(sent) {
		e := r.nextFor(t, acc.ev.Conn)
		if e.ev.Kind != node.EvReceived {
			t.Fatalf("got %v (%v) after %d of %d bytes", e.ev.Kind, e.ev.Err, len(got), len(sent))
		}
		if big[len(got)] {
			size := 4 + int(binary.BigEndian.Uint32(sent[len(got):]))
			if len(e.ev.Data) != size {
				t.Fatalf("frame at %d: got %d bytes in one Data, want the whole frame of %d", len(got), len(e.ev.Data), size)
			}
		}
		got = append(got, e.ev.Data...)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent) {
		t.Fatal("bytes differ from those sent")
	}

	// A long frame cut short by the peer's close: its bytes, then EOF.
	f := make([]byte, 4+readBufSize*2)
	binary.BigEndian.PutUint32(f, uint32(readBufSize*3))
	nc2, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	acc2 := r.waitKind(t, node.EvAccepted)
	nc2.Write(f)
	nc2.Close()
	if b := r.recvN(t, acc2.ev.Conn, len(f)); !bytes.Equal(b, f) {
		t.Fatal("partial frame: bytes differ")
	}
	if e := r.nextFor(t, acc2.ev.Conn); e.ev.Kind != node.EvClosed || !errors.Is(e.ev.Err, node.ErrEOF) {
		t.Fatalf("after a partial frame: %v %v, want closed EOF", e.ev.Kind, e.ev.Err)
	}
}

// TestFrameHintRecycle: a core that copies each large frame and hands its
// buffer back (Env.Recycle) gets later frames read into the same buffers,
// and every byte as sent.
func TestFrameHintRecycle(t *testing.T) {
	leakCheck(t)
	var mu sync.Mutex
	var got []byte
	bufs := map[*byte]int{} // large frames' buffers, by first byte
	r := start(t, Config{FrameHint: 32 << 20}, func(p *probe, ev node.Event) {
		if ev.Kind != node.EvReceived {
			return
		}
		mu.Lock()
		got = append(got, ev.Data...)
		if len(ev.Data) > readBufSize {
			bufs[&ev.Data[0]]++
			p.env.Recycle(ev.Data)
		}
		mu.Unlock()
	})
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	acc := r.waitKind(t, node.EvAccepted)
	// One frame at a time, each sent once the core has handled (and
	// recycled) the one before, so every frame after the first must find a
	// buffer: a count of reuses that does not depend on timing.
	var sent []byte
	const frames = 30
	for i := range frames {
		n := 1<<20 - 4 - i*1000 // each fits the buffers before it
		f := bytes.Repeat([]byte{byte(i + 1)}, 4+n)
		binary.BigEndian.PutUint32(f, uint32(n))
		sent = append(sent, f...)
		if _, err := nc.Write(f); err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(f); {
			e := r.nextFor(t, acc.ev.Conn)
			if e.ev.Kind != node.EvReceived {
				t.Fatalf("frame %d: got %v", i, e.ev.Kind)
			}
			n += len(e.ev.Data)
		}
		r.do(t, func(*probe) {}) // the Step that recycled it has returned
	}
	mu.Lock()
	defer mu.Unlock()
	if !bytes.Equal(got, sent) {
		t.Fatal("bytes differ from those sent")
	}
	reused := 0
	for _, n := range bufs {
		reused += n - 1
	}
	if reused != frames-1 {
		t.Fatalf("%d large frames in %d buffers: want every frame after the first in the first's buffer", frames, len(bufs))
	}
}

func TestFramePool(t *testing.T) {
	var p framePool
	a := p.get(1 << 20)
	if len(a) != 1<<20 || cap(a) < 1<<20 {
		t.Fatalf("get: len %d cap %d", len(a), cap(a))
	}
	p.put(a)
	if b := p.get(3 << 20); &b[:1][0] == &a[:1][0] {
		t.Fatal("a buffer under the size asked for was reused")
	}
	big := make([]byte, 4<<20)
	p.put(big)
	if b := p.get(1<<20 - 100); &b[0] != &a[0] || len(b) != 1<<20-100 {
		t.Fatal("the smallest fitting buffer was not the one reused")
	}
	if b := p.get(100 << 10); &b[0] != &big[0] {
		t.Fatal("a larger buffer was not reused for a smaller frame")
	}
	p.put(make([]byte, readBufSize)) // a small frame's: not kept
	if len(p.free) != 0 {
		t.Fatalf("kept a buffer of %d bytes", readBufSize)
	}
	for range framePoolMax + 5 {
		p.put(make([]byte, 1<<20))
	}
	if len(p.free) != framePoolMax || p.bytes != framePoolMax<<20 {
		t.Fatalf("kept %d buffers, %d bytes; bounds %d, %d", len(p.free), p.bytes, framePoolMax, framePoolMaxBytes)
	}
	// A larger buffer makes room by dropping a smaller one; a smaller one
	// does not displace larger ones.
	p.put(make([]byte, 2<<20))
	if len(p.free) != framePoolMax || p.bytes != (framePoolMax+1)<<20 {
		t.Fatalf("after a larger put: %d buffers, %d bytes", len(p.free), p.bytes)
	}
	p.put(make([]byte, 512<<10))
	if p.bytes != (framePoolMax+1)<<20 {
		t.Fatalf("a smaller buffer displaced a larger one: %d bytes", p.bytes)
	}
	p = framePool{}
	for range 10 {
		p.put(make([]byte, 16<<20))
	}
	if p.bytes > framePoolMaxBytes {
		t.Fatalf("kept %d bytes, bound %d", p.bytes, framePoolMaxBytes)
	}
}
