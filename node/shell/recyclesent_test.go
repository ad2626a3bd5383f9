package shell

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"herd/node"
)

// A read's buffer recycled after the core sent from it (Env.RecycleSent)
// goes back to the pool only once the connection's writer is past it, and
// the next large read (disk.ReaderInto) then reads into it.
func TestRecycleSentReadBuffer(t *testing.T) {
	leakCheck(t)
	fs, _ := newRealFS(t)
	r := start(t, Config{FS: fs}, nil)
	nc, err := net.Dial("tcp", r.sh.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	conn := r.waitKind(t, node.EvAccepted).ev.Conn

	const size = 1 << 20
	content := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	r.do(t, func(p *probe) {
		p.env.Disk(node.WriteOp("f", 0, content))
		p.env.Disk(node.ReadOp("f", 0, size))
	})
	r.waitKind(t, node.EvDiskDone)
	first := r.waitKind(t, node.EvDiskDone).ev.Data
	if !bytes.Equal(first, content) {
		t.Fatal("read back something else")
	}
	inPool := func(b []byte) bool {
		r.sh.frames.mu.Lock()
		defer r.sh.frames.mu.Unlock()
		for _, f := range r.sh.frames.free {
			if &f[:1][0] == &b[0] {
				return true
			}
		}
		return false
	}
	// More than the socket takes while the peer reads nothing (loopback
	// buffers are a few MiB), then the read's bytes, then the recycle.
	filler := make([]byte, 32<<20)
	r.do(t, func(p *probe) {
		p.env.Send(conn, filler)
		p.env.Send(conn, first[:size/2])
		p.env.RecycleSent(conn, first)
	})
	time.Sleep(100 * time.Millisecond)
	if inPool(first) {
		t.Fatal("recycled before the bytes sent from it were written")
	}
	got := make([]byte, len(filler)+size/2)
	if _, err := io.ReadFull(nc, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got[len(filler):], content[:size/2]) {
		t.Fatal("the bytes sent from the recycled buffer arrived changed")
	}
	deadline := time.Now().Add(waitLimit)
	for !inPool(first) {
		if time.Now().After(deadline) {
			t.Fatal("not recycled after the bytes were written")
		}
		time.Sleep(time.Millisecond)
	}
	r.do(t, func(p *probe) { p.env.Disk(node.ReadOp("f", 0, size)) })
	second := r.waitKind(t, node.EvDiskDone).ev.Data
	if &second[0] != &first[0] || !bytes.Equal(second, content) {
		t.Fatal("the next read did not read into the recycled buffer")
	}
}
