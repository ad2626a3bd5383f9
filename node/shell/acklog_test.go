package shell

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"herd/disk"
	"herd/node"
)

// ackLog is a small durable-log core. Clients send frames (4-byte big-endian
// length, payload); the core appends each payload to one file, and a commit
// timer turns a batch of appended frames into one Sync, behind which every
// frame of the batch is acknowledged with SendAfter. An ack is
//
//	index uint32 (per connection, from 0), length uint32, file offset uint64, crc32 uint32
//
// so a client can check order, content and where its payload went.
type ackLog struct {
	env     node.Env
	conns   map[node.ConnID]*alConn
	off     int64
	pending []alAck
	armed   bool
	lastOp  node.OpID
}

type alConn struct {
	buf []byte
	n   uint32
}

type alAck struct {
	c   node.ConnID
	ack []byte
}

const (
	ackLen      = 20
	commitDelay = 200 * time.Microsecond
	logFile     = "log"
)

func (a *ackLog) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvAccepted:
		a.conns[ev.Conn] = &alConn{}
	case node.EvReceived:
		c := a.conns[ev.Conn]
		c.buf = append(c.buf, ev.Data...)
		for len(c.buf) >= 4 {
			n := int(binary.BigEndian.Uint32(c.buf))
			if len(c.buf) < 4+n {
				break
			}
			payload := bytes.Clone(c.buf[4 : 4+n])
			a.env.Disk(node.WriteOp(logFile, a.off, payload))
			ack := make([]byte, ackLen)
			binary.BigEndian.PutUint32(ack[0:], c.n)
			binary.BigEndian.PutUint32(ack[4:], uint32(n))
			binary.BigEndian.PutUint64(ack[8:], uint64(a.off))
			binary.BigEndian.PutUint32(ack[16:], crc32.ChecksumIEEE(payload))
			a.pending = append(a.pending, alAck{ev.Conn, ack})
			a.off += int64(n)
			c.n++
			c.buf = c.buf[4+n:]
		}
		if len(a.pending) > 0 && !a.armed {
			a.env.SetTimer("commit", commitDelay)
			a.armed = true
		}
	case node.EvTimer:
		a.armed = false
		sync := a.env.Disk(node.SyncOp(logFile))
		for _, p := range a.pending {
			a.env.SendAfter(p.c, p.ack, sync)
		}
		a.pending = a.pending[:0]
	case node.EvDiskDone:
		if ev.Op != a.lastOp+1 {
			panic(fmt.Sprintf("disk completion %d after %d", ev.Op, a.lastOp))
		}
		a.lastOp = ev.Op
		if ev.Err != nil {
			a.env.Halt(ev.Err.Error())
		}
	case node.EvClosed:
		delete(a.conns, ev.Conn)
	}
}

type ackedFrame struct {
	off     int64
	payload []byte
}

// ackClient sends nframes random frames in random chunkings and checks every
// ack byte for byte. durable, if set, must already hold a frame's payload when
// its ack arrives.
func ackClient(addr string, seed uint64, nframes int, durable func(off int64, n int) []byte) ([]ackedFrame, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	payloads := make([][]byte, nframes)
	var stream []byte
	for i := range payloads {
		n := rng.IntN(64)
		switch rng.IntN(20) {
		case 0:
			n = 0
		case 1:
			n = 1000 + rng.IntN(4000)
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		payloads[i] = p
		stream = binary.BigEndian.AppendUint32(stream, uint32(n))
		stream = append(stream, p...)
	}
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	werr := make(chan error, 1)
	go func() {
		wrng := rand.New(rand.NewPCG(seed, 2))
		rest := stream
		for len(rest) > 0 {
			k := min(len(rest), 1+wrng.IntN(3000))
			if wrng.IntN(4) == 0 {
				k = min(len(rest), 1+wrng.IntN(7)) // split inside headers too
			}
			if _, err := nc.Write(rest[:k]); err != nil {
				werr <- err
				return
			}
			rest = rest[k:]
		}
		werr <- nil
	}()
	out := make([]ackedFrame, nframes)
	var ack [ackLen]byte
	nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	for i := range payloads {
		if _, err := io.ReadFull(nc, ack[:]); err != nil {
			nc.Close()
			<-werr
			return nil, fmt.Errorf("ack %d: %w", i, err)
		}
		idx := binary.BigEndian.Uint32(ack[0:])
		n := binary.BigEndian.Uint32(ack[4:])
		off := int64(binary.BigEndian.Uint64(ack[8:]))
		crc := binary.BigEndian.Uint32(ack[16:])
		p := payloads[i]
		if idx != uint32(i) || n != uint32(len(p)) || crc != crc32.ChecksumIEEE(p) {
			nc.Close()
			<-werr
			return nil, fmt.Errorf("ack %d: got index %d len %d crc %x, want index %d len %d crc %x",
				i, idx, n, crc, i, len(p), crc32.ChecksumIEEE(p))
		}
		if durable != nil && len(p) > 0 {
			if got := durable(off, len(p)); !bytes.Equal(got, p) {
				nc.Close()
				<-werr
				return nil, fmt.Errorf("ack %d arrived before its payload was durable (off %d len %d)", i, off, len(p))
			}
		}
		out[i] = ackedFrame{off: off, payload: p}
	}
	if err := <-werr; err != nil {
		return nil, err
	}
	return out, nil
}

// checkLog checks that the acked frames tile the file exactly, in place.
func checkLog(t *testing.T, file []byte, frames []ackedFrame) {
	t.Helper()
	sort.Slice(frames, func(i, j int) bool {
		if frames[i].off != frames[j].off {
			return frames[i].off < frames[j].off
		}
		return len(frames[i].payload) < len(frames[j].payload)
	})
	var at int64
	for _, f := range frames {
		if f.off != at {
			t.Fatalf("frame at offset %d, want %d: frames overlap or leave a gap", f.off, at)
		}
		end := f.off + int64(len(f.payload))
		if end > int64(len(file)) || !bytes.Equal(file[f.off:end], f.payload) {
			t.Fatalf("file content at %d..%d does not match the acked payload", f.off, end)
		}
		at = end
	}
	if at != int64(len(file)) {
		t.Fatalf("file is %d bytes, acked frames cover %d", len(file), at)
	}
}

func runAckLog(t *testing.T, fs disk.FS, durable func(off int64, n int) []byte, clients, frames int) []ackedFrame {
	t.Helper()
	sh, err := New(Config{Name: "acklog", FS: fs, Listen: []string{"127.0.0.1:0"}, Seed: 1},
		func(env node.Env) node.Machine { return &ackLog{env: env, conns: map[node.ConnID]*alConn{}} })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- sh.Run(ctx) }()

	var wg sync.WaitGroup
	var mu sync.Mutex
	var all []ackedFrame
	errs := make([]error, clients)
	for i := range clients {
		wg.Go(func() {
			got, err := ackClient(sh.Addrs()[0], uint64(i+1), frames, durable)
			errs[i] = err
			mu.Lock()
			all = append(all, got...)
			mu.Unlock()
		})
	}
	wg.Wait()
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if busy := shellGoroutines(); len(busy) > 0 {
		t.Fatalf("Run returned while shell goroutines were running:\n%s", strings.Join(busy, "\n\n"))
	}
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if len(all) != clients*frames {
		t.Fatalf("%d frames acked, want %d", len(all), clients*frames)
	}
	return all
}

func TestAckLogMemFS(t *testing.T) {
	leakCheck(t)
	fs := newMemFS()
	// A slow sync widens the window in which an ack that did not wait for
	// its sync would be caught by the durability check.
	fs.syncDelay = 100 * time.Microsecond
	frames := runAckLog(t, fs, func(off int64, n int) []byte { return fs.DurableRange(logFile, off, n) }, 4, 1500)
	checkLog(t, fs.Data(logFile), frames)
}

func TestAckLogRealDisk(t *testing.T) {
	leakCheck(t)
	fs, dir := newRealFS(t)
	frames := runAckLog(t, fs, nil, 3, 1000)
	file, err := readRealFile(dir, logFile)
	if err != nil {
		t.Fatal(err)
	}
	checkLog(t, file, frames)
}
