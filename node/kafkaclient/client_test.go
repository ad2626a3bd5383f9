package kafkaclient

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"herd/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func values(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "value-%d-%s", i, strings.Repeat("x", i*7))
	}
	return out
}

// A batch this client builds decodes back to its values, passes its CRC and
// is what kmsg reads as a RecordBatch v2.
func TestBatchRoundTrip(t *testing.T) {
	for n := 1; n <= 20; n++ {
		vs := values(n)
		raw := EncodeBatch(vs, 1_767_225_600_000)
		var kb kmsg.RecordBatch
		if err := kb.ReadFrom(raw); err != nil {
			t.Fatalf("kmsg cannot read the batch: %v", err)
		}
		if kb.Magic != 2 || kb.NumRecords != int32(n) || kb.LastOffsetDelta != int32(n-1) || int(kb.Length) != len(raw)-12 {
			t.Fatalf("header %+v for %d records of %d bytes", kb, n, len(raw))
		}
		if uint32(kb.CRC) != crc32.Checksum(raw[21:], crc32.MakeTable(crc32.Castagnoli)) {
			t.Fatal("CRC does not cover attributes..end")
		}
		// Stamp a base offset as the broker does (outside the CRC).
		binary.BigEndian.PutUint64(raw, 100)
		bs := DecodeBatches(append(raw, raw...))
		if len(bs) != 2 {
			t.Fatalf("%d batches", len(bs))
		}
		b := bs[0]
		if b.Problem != "" || !b.CRCValid || len(b.Records) != n || b.BaseOffset != 100 {
			t.Fatalf("decoded %+v", b)
		}
		for i, r := range b.Records {
			if r.Offset != 100+int64(i) || !bytes.Equal(r.Value, vs[i]) {
				t.Fatalf("record %d: %d %q", i, r.Offset, r.Value)
			}
		}
	}
}

// What is wrong with a served batch shows in the decoded batch.
func TestBatchDamageIsReported(t *testing.T) {
	raw := EncodeBatch(values(3), 0)
	flipped := bytes.Clone(raw)
	flipped[len(flipped)-3] ^= 0x40
	if b := DecodeBatches(flipped)[0]; b.CRCValid {
		t.Fatal("a flipped bit passed the CRC")
	}
	if b := DecodeBatches(raw[:len(raw)-1])[0]; !strings.Contains(b.Problem, "not whole") {
		t.Fatalf("a cut batch: %q", b.Problem)
	}
	if b := DecodeBatches(raw[:7])[0]; b.Problem == "" {
		t.Fatal("a few trailing bytes were taken for a batch")
	}
	miscounted := bytes.Clone(raw)
	binary.BigEndian.PutUint32(miscounted[57:], 4)
	if b := DecodeBatches(miscounted)[0]; b.Problem == "" {
		t.Fatal("a record count larger than the records went unnoticed")
	}
	short := bytes.Clone(raw)
	binary.BigEndian.PutUint32(short[57:], 2)
	if b := DecodeBatches(short)[0]; !strings.Contains(b.Problem, "after the 2 records") {
		t.Fatalf("a record count smaller than the records: %q", b.Problem)
	}
}

// ---- the client against a scripted broker ----

// fakeEnv records what the client does.
type fakeEnv struct {
	rng    *node.Rand
	now    node.Time
	sent   [][]byte
	dialed int
	closed int
	timers map[node.TimerName]time.Duration
}

func newFakeEnv() *fakeEnv {
	return &fakeEnv{rng: node.NewRand(rand.NewPCG(1, 2)), timers: map[node.TimerName]time.Duration{}}
}

func (e *fakeEnv) Now() node.Time                                 { return e.now }
func (e *fakeEnv) WallClock() int64                               { return 1_767_225_600_000 }
func (e *fakeEnv) Rand() *node.Rand                               { return e.rng }
func (e *fakeEnv) Logf(string, ...any)                            {}
func (e *fakeEnv) Dial(string) node.ConnID                        { e.dialed++; return node.ConnID(e.dialed) }
func (e *fakeEnv) Send(_ node.ConnID, data []byte)                { e.sent = append(e.sent, data) }
func (e *fakeEnv) SendAfter(c node.ConnID, d []byte, _ node.OpID) { e.Send(c, d) }
func (e *fakeEnv) Close(node.ConnID)                              { e.closed++ }
func (e *fakeEnv) SetTimer(n node.TimerName, d time.Duration)     { e.timers[n] = d }
func (e *fakeEnv) CancelTimer(n node.TimerName)                   { delete(e.timers, n) }
func (e *fakeEnv) Disk(node.DiskOp) node.OpID                     { return 0 }
func (e *fakeEnv) Halt(string)                                    {}
func (e *fakeEnv) Recycle([]byte)                                 {}
func (e *fakeEnv) RecycleSent(node.ConnID, []byte)                {}

// request decodes the i-th frame the client sent: key, version, correlation.
func (e *fakeEnv) request(t *testing.T, i int) (key, version int16, corr int32) {
	t.Helper()
	f := e.sent[i]
	if int(binary.BigEndian.Uint32(f)) != len(f)-4 {
		t.Fatalf("frame %d: bad length prefix", i)
	}
	return int16(binary.BigEndian.Uint16(f[4:])), int16(binary.BigEndian.Uint16(f[6:])), int32(binary.BigEndian.Uint32(f[8:]))
}

// reply frames resp for correlation id corr (non-flexible header).
func reply(corr int32, resp kmsg.Response) []byte {
	out := binary.BigEndian.AppendUint32(make([]byte, 4, 64), uint32(corr))
	if resp.IsFlexible() && resp.Key() != 18 {
		out = append(out, 0)
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out
}

func apiVersionsReply() *kmsg.ApiVersionsResponse {
	r := kmsg.NewPtrApiVersionsResponse()
	r.Version = 3
	for _, k := range []kmsg.ApiVersionsResponseApiKey{{ApiKey: 0, MinVersion: 3, MaxVersion: 8},
		{ApiKey: 1, MinVersion: 4, MaxVersion: 11}, {ApiKey: 3, MinVersion: 0, MaxVersion: 8}, {ApiKey: 18, MinVersion: 0, MaxVersion: 3}} {
		r.ApiKeys = append(r.ApiKeys, k)
	}
	return r
}

// connect runs a client through ApiVersions and Metadata.
func connect(t *testing.T, cfg Config) (*Client, *fakeEnv) {
	t.Helper()
	env := newFakeEnv()
	c := New(cfg)(env).(*Client)
	c.Step(node.Event{Kind: node.EvStart})
	c.Step(node.Event{Kind: node.EvConnected, Conn: 1})
	key, version, corr := env.request(t, 0)
	if key != 18 || version != 3 {
		t.Fatalf("first request key %d v%d, want ApiVersions v3", key, version)
	}
	c.Step(node.Event{Kind: node.EvReceived, Conn: 1, Data: reply(corr, apiVersionsReply())})
	key, version, corr = env.request(t, 1)
	if key != 3 {
		t.Fatalf("second request key %d, want Metadata", key)
	}
	md := kmsg.NewPtrMetadataResponse()
	md.Version = version
	c.Step(node.Event{Kind: node.EvReceived, Conn: 1, Data: reply(corr, md)})
	return c, env
}

type recorder struct {
	results    []Result
	violations []string
}

func (r *recorder) config(ops ...Op) Config {
	return Config{Name: "c", Broker: "b:9092", MaxInflight: len(ops),
		Next: func(*node.Rand) (Op, bool) {
			if len(ops) == 0 {
				return Op{}, false
			}
			op := ops[0]
			ops = ops[1:]
			return op, true
		},
		Return:      func(_ int, _ Op, res Result) { r.results = append(r.results, res) },
		OnViolation: func(msg string) { r.violations = append(r.violations, msg) },
	}
}

func produceReply(version int16, topic string, base int64) *kmsg.ProduceResponse {
	r := kmsg.NewPtrProduceResponse()
	r.Version = version
	p := kmsg.NewProduceResponseTopicPartition()
	p.BaseOffset = base
	t := kmsg.NewProduceResponseTopic()
	t.Topic = topic
	t.Partitions = []kmsg.ProduceResponseTopicPartition{p}
	r.Topics = []kmsg.ProduceResponseTopic{t}
	return r
}

// Pipelined produces are answered in order; their offsets come back.
func TestPipelinedRepliesInOrder(t *testing.T) {
	var rec recorder
	op := Op{Kind: Produce, Topic: "t", Values: values(2), Acks: -1}
	c, env := connect(t, rec.config(op, op))
	if len(env.sent) != 4 {
		t.Fatalf("%d frames sent, want ApiVersions, Metadata and two produces", len(env.sent))
	}
	_, v1, c1 := env.request(t, 2)
	_, v2, c2 := env.request(t, 3)
	if c2 != c1+1 {
		t.Fatalf("correlation ids %d then %d", c1, c2)
	}
	c.Step(node.Event{Kind: node.EvReceived, Conn: 1, Data: append(reply(c1, produceReply(v1, "t", 5)), reply(c2, produceReply(v2, "t", 7))...)})
	if len(rec.violations) != 0 || len(rec.results) != 2 || rec.results[0].BaseOffset != 5 || rec.results[1].BaseOffset != 7 {
		t.Fatalf("results %+v, violations %v", rec.results, rec.violations)
	}
	if !c.Done() {
		t.Fatal("not done after the workload ended")
	}
}

// A reply out of request order is a violation; the connection is dropped and
// whatever was outstanding has an unknown outcome.
func TestReplyOutOfOrderIsAViolation(t *testing.T) {
	var rec recorder
	op := Op{Kind: Produce, Topic: "t", Values: values(1), Acks: 1}
	c, env := connect(t, rec.config(op, op))
	_, v2, c2 := env.request(t, 3)
	c.Step(node.Event{Kind: node.EvReceived, Conn: 1, Data: reply(c2, produceReply(v2, "t", 0))})
	if len(rec.violations) != 1 || !strings.Contains(rec.violations[0], "out of request order") {
		t.Fatalf("violations %v", rec.violations)
	}
	if len(rec.results) != 2 || !rec.results[0].Unknown || !rec.results[1].Unknown {
		t.Fatalf("results %+v", rec.results)
	}
	if env.closed != 1 {
		t.Fatal("connection not closed")
	}
	if _, ok := env.timers[timerRetry]; !ok {
		t.Fatal("no reconnect scheduled")
	}
}

// A connection lost with requests outstanding makes them unknown; the
// planted bug reports them refused instead.
func TestLostConnectionMakesOutcomesUnknown(t *testing.T) {
	for _, bug := range []string{"", BugForgetUnknown} {
		var rec recorder
		cfg := rec.config(Op{Kind: Produce, Topic: "t", Values: values(1), Acks: 1})
		cfg.Bug = bug
		c, _ := connect(t, cfg)
		c.Step(node.Event{Kind: node.EvClosed, Conn: 1, Err: node.ErrReset})
		if len(rec.results) != 1 || rec.results[0].Unknown != (bug == "") {
			t.Fatalf("bug %q: results %+v", bug, rec.results)
		}
	}
}
