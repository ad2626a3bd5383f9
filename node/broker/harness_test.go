package broker

import (
	"encoding/binary"
	"hash/crc32"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"herd/disk"
	"herd/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// harness is a fake node.Env: disk ops run on a SimFS and complete when the
// test settles, time moves only when the test advances it, and sent bytes
// are collected per connection.
type harness struct {
	t       testing.TB
	now     node.Time
	wall    int64
	rnd     *node.Rand
	fs      *disk.SimFS
	m       node.Machine
	nextOp  node.OpID
	pending []node.Event
	timers  map[node.TimerName]node.Time
	out     map[node.ConnID][]byte
	closed  map[node.ConnID]bool
	halted  string
	// recycled and recycledSent hold the buffers the broker handed back
	// (Env.Recycle, Env.RecycleSent).
	recycled, recycledSent [][]byte
	conn                   node.ConnID
	corr                   int32
	// readBytes sums the lengths of the read ops submitted.
	readBytes int64
}

func newHarness(t testing.TB, cfg Config, open openDirFunc) *harness {
	h := &harness{
		t: t, wall: 1_700_000_000_000, fs: disk.NewSimFS(),
		rnd:    node.NewRand(rand.NewPCG(1, 2)),
		timers: map[node.TimerName]node.Time{},
		out:    map[node.ConnID][]byte{}, closed: map[node.ConnID]bool{},
	}
	h.m = newFactory(cfg, open)(h)
	h.m.Step(node.Event{Kind: node.EvStart})
	h.settle()
	return h
}

func testConfig() Config {
	c := DefaultConfig("")
	c.Listeners = []Listener{{Name: "PLAINTEXT", Host: "127.0.0.1", Port: 9092}}
	return c
}

func (h *harness) Now() node.Time                  { return h.now }
func (h *harness) WallClock() int64                { return h.wall + int64(h.now/1e6) }
func (h *harness) Rand() *node.Rand                { return h.rnd }
func (h *harness) Logf(format string, args ...any) { h.t.Logf(format, args...) }
func (h *harness) Dial(string) node.ConnID         { panic("broker does not dial") }
func (h *harness) Send(c node.ConnID, data []byte) {
	if !h.closed[c] {
		h.out[c] = append(h.out[c], data...)
	}
}
func (h *harness) SendAfter(c node.ConnID, data []byte, _ node.OpID) { h.Send(c, data) }
func (h *harness) Close(c node.ConnID)                               { h.closed[c] = true }
func (h *harness) SetTimer(n node.TimerName, d time.Duration)        { h.timers[n] = h.now.Add(d) }
func (h *harness) CancelTimer(n node.TimerName)                      { delete(h.timers, n) }
func (h *harness) Halt(reason string)                                { h.halted = reason }

// Recycle and RecycleSent record the buffer and overwrite it, as the
// simulator does: Send copied what was sent, so a buffer recycled too
// early shows as garbage in what the broker answers or writes.
func (h *harness) Recycle(data []byte) {
	h.recycled = append(h.recycled, data)
	poisonBuf(data)
}
func (h *harness) RecycleSent(c node.ConnID, data []byte) {
	h.recycledSent = append(h.recycledSent, data)
	poisonBuf(data)
}

func poisonBuf(data []byte) {
	data = data[:cap(data)]
	for i := range data {
		data[i] = 0xA5
	}
}

func (h *harness) Disk(op node.DiskOp) node.OpID {
	if op.Kind == node.OpRead {
		h.readBytes += int64(op.Len)
	}
	h.nextOp++
	h.pending = append(h.pending, disk.Exec(h.fs, h.nextOp, op))
	return h.nextOp
}

// settle delivers disk completions until none is left.
func (h *harness) settle() {
	for len(h.pending) > 0 && h.halted == "" {
		ev := h.pending[0]
		h.pending = h.pending[1:]
		h.m.Step(ev)
	}
	if h.halted != "" {
		h.t.Fatalf("broker halted: %s", h.halted)
	}
}

// advance moves time forward by d, firing due timers in order.
func (h *harness) advance(d time.Duration) {
	end := h.now.Add(d)
	for {
		var name node.TimerName
		at := end + 1
		for _, n := range sortedTimerNames(h.timers) {
			if t := h.timers[n]; t <= end && t < at {
				name, at = n, t
			}
		}
		if name == "" {
			break
		}
		h.now = max(h.now, at)
		delete(h.timers, name)
		h.m.Step(node.Event{Kind: node.EvTimer, Timer: name})
		h.settle()
	}
	h.now = end
}

func sortedTimerNames(m map[node.TimerName]node.Time) []node.TimerName {
	var out []node.TimerName
	for n := range m { // order-independent: sorted below
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// connect opens a client connection.
func (h *harness) connect() node.ConnID {
	h.conn++
	h.m.Step(node.Event{Kind: node.EvAccepted, Conn: h.conn, Local: "127.0.0.1:9092", Remote: "127.0.0.1:5000"})
	return h.conn
}

// frame encodes req as a request frame with a fresh correlation id.
func (h *harness) frame(req kmsg.Request) ([]byte, int32) {
	h.corr++
	return kmsg.NewRequestFormatter(kmsg.FormatterClientID("test")).AppendRequest(nil, req, h.corr), h.corr
}

// send delivers req on c without settling.
func (h *harness) send(c node.ConnID, req kmsg.Request) int32 {
	f, corr := h.frame(req)
	h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: f})
	return corr
}

// call sends req on c, settles, and returns its response.
func (h *harness) call(c node.ConnID, req kmsg.Request) kmsg.Response {
	h.t.Helper()
	corr := h.send(c, req)
	h.settle()
	resps := h.replies(c, req)
	if len(resps) != 1 {
		h.t.Fatalf("%T: got %d replies, want 1", req, len(resps))
	}
	if resps[0].corr != corr {
		h.t.Fatalf("reply correlation id %d, want %d", resps[0].corr, corr)
	}
	return resps[0].resp
}

type reply struct {
	corr int32
	resp kmsg.Response
}

// replies parses every complete reply frame waiting on c, decoding each as
// the response to a request like req.
func (h *harness) replies(c node.ConnID, like ...kmsg.Request) []reply {
	h.t.Helper()
	var out []reply
	buf := h.out[c]
	for i := 0; len(buf) >= 4; i++ {
		n := int(binary.BigEndian.Uint32(buf))
		if len(buf) < 4+n {
			break
		}
		body := buf[4 : 4+n]
		buf = buf[4+n:]
		req := like[min(i, len(like)-1)]
		resp := req.ResponseKind()
		corr := int32(binary.BigEndian.Uint32(body))
		body = body[4:]
		if resp.IsFlexible() && resp.Key() != 18 {
			body = body[1:]
		}
		if err := resp.ReadFrom(body); err != nil {
			h.t.Fatalf("decoding %T: %v", resp, err)
		}
		out = append(out, reply{corr, resp})
	}
	h.out[c] = buf
	return out
}

// batch builds a RecordBatch v2 of uncompressed records with the given
// values, timestamps starting at ts.
func batch(ts int64, values ...string) []byte {
	var recs []byte
	for i, v := range values {
		var r []byte
		r = append(r, 0)                                // attributes
		r = binary.AppendVarint(r, int64(i))            // timestamp delta
		r = binary.AppendVarint(r, int64(i))            // offset delta
		r = binary.AppendVarint(r, -1)                  // null key
		r = binary.AppendVarint(r, int64(len(v)))       // value length
		r = append(r, v...)                             // value
		r = binary.AppendVarint(r, 0)                   // no headers
		recs = binary.AppendVarint(recs, int64(len(r))) // record length
		recs = append(recs, r...)
	}
	b := make([]byte, 61, 61+len(recs))
	binary.BigEndian.PutUint64(b[0:], 0)
	binary.BigEndian.PutUint32(b[8:], uint32(61+len(recs)-12))
	binary.BigEndian.PutUint32(b[12:], 0)
	b[16] = 2
	binary.BigEndian.PutUint16(b[21:], 0)
	binary.BigEndian.PutUint32(b[23:], uint32(len(values)-1))
	binary.BigEndian.PutUint64(b[27:], uint64(ts))
	binary.BigEndian.PutUint64(b[35:], uint64(ts+int64(len(values)-1)))
	binary.BigEndian.PutUint64(b[43:], ^uint64(0))
	binary.BigEndian.PutUint16(b[51:], 0xffff)
	binary.BigEndian.PutUint32(b[53:], 0xffffffff)
	binary.BigEndian.PutUint32(b[57:], uint32(len(values)))
	b = append(b, recs...)
	binary.BigEndian.PutUint32(b[17:], crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b
}
