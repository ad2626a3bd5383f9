package kafka

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/compat/kafka/broker"
)

// python is the interpreter with python3-kafka and python3-confluent-kafka
// (another python3 may come first on PATH).
const python = "/usr/bin/python3"

// The operations every client driver understands; py/kdriver.py documents
// them. Go drives kgo and kcat itself with the same operations.
type op struct {
	Op      string     `json:"op"`
	Topic   string     `json:"topic,omitempty"`
	Codec   string     `json:"codec,omitempty"`
	Acks    int        `json:"acks"`
	Records []rec      `json:"records,omitempty"`
	P       int32      `json:"p"`
	Offset  int64      `json:"offset"`
	N       int        `json:"n"`
	Timeout float64    `json:"timeout,omitempty"` // seconds
	Times   []int64    `json:"times,omitempty"`
	Topics  []newTopic `json:"topics,omitempty"`
	Names   []string   `json:"names,omitempty"`
}

// rec is a record to produce or one that was consumed. nil K or V is null.
type rec struct {
	P      int32    `json:"p"`
	O      int64    `json:"o"`
	K      []byte   `json:"k"`
	V      []byte   `json:"v"`
	H      []header `json:"h"`
	TS     int64    `json:"ts,omitempty"` // produce: 0 means the client's clock
	TSType int      `json:"tstype"`       // 0 CreateTime, 1 LogAppendTime
}

type header struct {
	K string
	V []byte
}

func (h header) MarshalJSON() ([]byte, error) { return json.Marshal([]any{h.K, h.V}) }

func (h *header) UnmarshalJSON(b []byte) error {
	var kv []json.RawMessage
	if err := json.Unmarshal(b, &kv); err != nil || len(kv) != 2 {
		return fmt.Errorf("header %s: want [key, value]", b)
	}
	if err := json.Unmarshal(kv[0], &h.K); err != nil {
		return err
	}
	return json.Unmarshal(kv[1], &h.V)
}

type newTopic struct {
	Name       string `json:"name"`
	Partitions int32  `json:"partitions"`
	RF         int16  `json:"rf"`
}

type result struct {
	Records    []rec                       `json:"records"`
	Earliest   int64                       `json:"earliest"`
	Latest     int64                       `json:"latest"`
	Times      []timeOffset                `json:"times"`
	Errors     map[string]int16            `json:"errors"`
	Brokers    []mdBroker                  `json:"brokers"`
	Controller int32                       `json:"controller"`
	Topics     map[string]map[int32]mdPart `json:"topics"`
}

type timeOffset struct {
	Offset int64  `json:"offset"`
	TS     *int64 `json:"ts"` // nil: the client does not pass it on
}

type mdBroker struct {
	ID   int32  `json:"id"`
	Host string `json:"host"`
	Port int32  `json:"port"`
}

type mdPart struct {
	Leader   int32   `json:"leader"`
	Replicas []int32 `json:"replicas"`
	ISR      []int32 `json:"isr"`
}

// client is one Kafka client library as the tests see it.
type client struct {
	name string
	// codecs it can both write and read with the installed build.
	codecs []string
	// produceOffsets: the produce op reports each record's offset and
	// timestamp from the broker's ack.
	produceOffsets bool
	// timestamps: the producer can set a record's timestamp.
	timestamps bool
	// perRecordHeaders: headers can differ between records of one produce
	// op (kcat takes one set of -H headers per invocation); emptyValues: it
	// can produce an empty, non-null value (kcat -Z turns "" into null).
	perRecordHeaders, emptyValues bool
	// admin: create and delete work; defaultPartitions: CreateTopics
	// with -1 partitions (num.partitions) can be asked for.
	admin, defaultPartitions bool
	run                      func(t *testing.T, b *broker.Broker, ops []op) []result
}

func (c *client) has(codec string) bool {
	for _, x := range c.codecs {
		if x == codec {
			return true
		}
	}
	return false
}

var allCodecs = []string{"none", "gzip", "snappy", "lz4", "zstd"}

// clients are the four libraries. kafka-python has no snappy, lz4 or zstd
// module on this system (kafka.codec.has_snappy() etc. are False), so it
// only does gzip; librdkafka 2.0.2 (kcat, confluent-kafka) and kgo do all.
var clients = []*client{
	{name: "kafka-python", codecs: []string{"none", "gzip"}, produceOffsets: true, timestamps: true,
		perRecordHeaders: true, emptyValues: true, admin: true, run: pyRunner("kp.py")},
	{name: "confluent-kafka", codecs: allCodecs, produceOffsets: true, timestamps: true,
		perRecordHeaders: true, emptyValues: true, admin: true, defaultPartitions: true, run: pyRunner("ck.py")},
	{name: "kcat", codecs: allCodecs, run: runKcat},
	{name: "kgo", codecs: allCodecs, produceOffsets: true, timestamps: true,
		perRecordHeaders: true, emptyValues: true, admin: true, defaultPartitions: true, run: runKgo},
}

func clientNamed(name string) *client {
	for _, c := range clients {
		if c.name == name {
			return c
		}
	}
	panic("no client " + name)
}

// lockedBuffer is a bytes.Buffer safe for a subprocess's writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// pyRunner runs py/<script> once for a whole list of operations.
func pyRunner(script string) func(t *testing.T, b *broker.Broker, ops []op) []result {
	return func(t *testing.T, b *broker.Broker, ops []op) []result {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second+time.Duration(len(ops))*5*time.Second)
		defer cancel()
		abs, err := filepath.Abs(filepath.Join("py", script))
		if err != nil {
			t.Fatal(err)
		}
		in, err := json.Marshal(ops)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, python, abs)
		cmd.Dir = filepath.Dir(abs)
		cmd.Env = append(os.Environ(), "KAFKA_BOOTSTRAP="+b.Addr, "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1")
		cmd.Stdin = bytes.NewReader(in)
		cmd.WaitDelay = 5 * time.Second
		var stdout, stderr lockedBuffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		werr := cmd.Run()
		took := time.Since(start).Round(time.Millisecond)
		var res []result
		ok := false
		for _, line := range strings.Split(stdout.String(), "\n") {
			if j, found := strings.CutPrefix(line, "@@RESULT "); found {
				var r result
				if err := json.Unmarshal([]byte(j), &r); err != nil {
					t.Fatalf("%s: bad result line %q: %v", script, line, err)
				}
				res = append(res, r)
			}
			ok = ok || line == "@@OK "+script
		}
		if ctx.Err() != nil {
			t.Fatalf("%s: timed out after %v\n--- stdout ---\n%s--- stderr ---\n%s", script, took, stdout.String(), stderr.String())
		}
		if werr != nil || !ok || len(res) != len(ops) {
			failed := "?"
			if len(res) < len(ops) {
				o := ops[len(res)]
				failed = fmt.Sprintf("%s %s", o.Op, o.Topic)
			}
			t.Fatalf("%s failed (%v) after %v at op %d of %d (%s)\n--- stderr ---\n%s", script, werr, took, len(res), len(ops), failed, stderr.String())
		}
		return res
	}
}

// runKcat runs kcat once per operation (produce: once per partition).
func runKcat(t *testing.T, b *broker.Broker, ops []op) []result {
	t.Helper()
	var res []result
	for _, o := range ops {
		switch o.Op {
		case "produce":
			res = append(res, kcatProduce(t, b, o))
		case "consume":
			res = append(res, kcatConsume(t, b, o))
		case "offsets":
			r := result{Earliest: kcatQuery(t, b, o.Topic, o.P, -2), Latest: kcatQuery(t, b, o.Topic, o.P, -1)}
			for _, ts := range o.Times {
				r.Times = append(r.Times, timeOffset{Offset: kcatQuery(t, b, o.Topic, o.P, ts)})
			}
			res = append(res, r)
		case "metadata":
			res = append(res, kcatMetadata(t, b))
		default:
			t.Fatalf("kcat: unsupported op %q", o.Op)
		}
	}
	return res
}

func kcat(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "kcat", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || ctx.Err() != nil {
		t.Fatalf("kcat %s: %v (timed out: %v)\n--- stderr ---\n%s", strings.Join(args, " "), err, ctx.Err() != nil, stderr.String())
	}
	if s := stderr.String(); strings.Contains(s, "ERROR") || strings.Contains(s, "%3|") {
		t.Fatalf("kcat %s reported errors:\n%s", strings.Join(args, " "), s)
	}
	return []byte(stdout.String())
}

// kcat separates keys from values with 0x1f and records with 0x1e; with
// -Z an empty key or value is sent as null.
const kcatKeyDelim, kcatRecDelim = 0x1f, 0x1e

func kcatProduce(t *testing.T, b *broker.Broker, o op) result {
	t.Helper()
	// One invocation per run of records with the same partition.
	for i := 0; i < len(o.Records); {
		j := i
		for j < len(o.Records) && o.Records[j].P == o.Records[i].P {
			j++
		}
		args := []string{"-P", "-b", b.Addr, "-t", o.Topic, "-p", strconv.Itoa(int(o.Records[i].P)),
			"-K", `\x1f`, "-D", `\x1e`, "-Z", "-z", o.Codec, "-X", "acks=" + strconv.Itoa(o.Acks), "-q"}
		for _, h := range o.Records[i].H {
			args = append(args, "-H", h.K+"="+string(h.V))
		}
		var in []byte
		for _, r := range o.Records[i:j] {
			if !slicesEqualHeaders(r.H, o.Records[i].H) || r.TS != 0 || (r.V != nil && len(r.V) == 0) ||
				(r.K != nil && len(r.K) == 0) || bytes.ContainsAny(r.K, "\x1e\x1f") || bytes.ContainsAny(r.V, "\x1e\x1f") {
				t.Fatalf("kcat cannot produce record %+v", r)
			}
			in = append(in, r.K...)
			in = append(in, kcatKeyDelim)
			in = append(in, r.V...)
			in = append(in, kcatRecDelim)
		}
		kcat(t, in, args...)
		i = j
	}
	// kcat does not print the offsets it was given.
	return result{}
}

func slicesEqualHeaders(a, b []header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].K != b[i].K || !bytes.Equal(a[i].V, b[i].V) {
			return false
		}
	}
	return true
}

// kcatConsume reads with a format that gives the lengths of key and value
// (-1: null), so any bytes come back exactly. Header values must be
// printable without ',' or '='.
func kcatConsume(t *testing.T, b *broker.Broker, o op) result {
	t.Helper()
	if o.N == 0 {
		return result{}
	}
	out := kcat(t, nil, "-C", "-b", b.Addr, "-t", o.Topic, "-p", strconv.Itoa(int(o.P)), "-o", strconv.FormatInt(o.Offset, 10),
		"-c", strconv.Itoa(o.N), "-e", "-q", "-f", `@@%p %o %T %K %S\n%k%s\n%h\n`)
	var res result
	for len(out) > 0 {
		nl := bytes.IndexByte(out, '\n')
		if !bytes.HasPrefix(out, []byte("@@")) || nl < 0 {
			t.Fatalf("kcat output: unexpected %q", out)
		}
		var r rec
		var kl, vl int
		if _, err := fmt.Sscanf(string(out[2:nl]), "%d %d %d %d %d", &r.P, &r.O, &r.TS, &kl, &vl); err != nil {
			t.Fatalf("kcat output line %q: %v", out[:nl], err)
		}
		out = out[nl+1:]
		take := func(n int) []byte {
			if n < 0 {
				return nil
			}
			if len(out) < n {
				t.Fatalf("kcat output: %d bytes left, want %d", len(out), n)
			}
			v := append([]byte{}, out[:n]...)
			out = out[n:]
			return v
		}
		r.K, r.V = take(kl), take(vl)
		if len(out) == 0 || out[0] != '\n' {
			t.Fatalf("kcat output: no newline after the value")
		}
		out = out[1:]
		nl = bytes.IndexByte(out, '\n')
		if nl < 0 {
			t.Fatalf("kcat output: no header line")
		}
		if hs := string(out[:nl]); hs != "" {
			for _, kv := range strings.Split(hs, ",") {
				k, v, _ := strings.Cut(kv, "=")
				r.H = append(r.H, header{k, []byte(v)})
			}
		}
		out = out[nl+1:]
		res.Records = append(res.Records, r)
	}
	return res
}

// kcatQuery is `kcat -Q -t topic:p:ts` (one query per run: kcat answers
// only the last -t).
func kcatQuery(t *testing.T, b *broker.Broker, topic string, p int32, ts int64) int64 {
	t.Helper()
	out := kcat(t, nil, "-Q", "-b", b.Addr, "-t", fmt.Sprintf("%s:%d:%d", topic, p, ts), "-J")
	var m map[string]map[string]json.RawMessage
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("kcat -Q output %q: %v", out, err)
	}
	var po struct {
		Partition int32  `json:"partition"`
		Offset    int64  `json:"offset"`
		Err       string `json:"err"`
	}
	raw, ok := m[topic][strconv.Itoa(int(p))]
	if !ok {
		t.Fatalf("kcat -Q output %q: no partition %d", out, p)
	}
	if err := json.Unmarshal(raw, &po); err != nil || po.Err != "" {
		t.Fatalf("kcat -Q output %q: %v %s", out, err, po.Err)
	}
	return po.Offset
}

func kcatMetadata(t *testing.T, b *broker.Broker) result {
	t.Helper()
	out := kcat(t, nil, "-L", "-b", b.Addr, "-J")
	var md struct {
		Controller int32 `json:"controllerid"`
		Brokers    []struct {
			ID   int32  `json:"id"`
			Name string `json:"name"`
		} `json:"brokers"`
		Topics []struct {
			Topic      string `json:"topic"`
			Error      string `json:"error"`
			Partitions []struct {
				Partition int32                `json:"partition"`
				Leader    int32                `json:"leader"`
				Error     string               `json:"error"`
				Replicas  []struct{ ID int32 } `json:"replicas"`
				ISRs      []struct{ ID int32 } `json:"isrs"`
			} `json:"partitions"`
		} `json:"topics"`
	}
	if err := json.Unmarshal(out, &md); err != nil {
		t.Fatalf("kcat -L -J output %q: %v", out, err)
	}
	res := result{Controller: md.Controller, Topics: map[string]map[int32]mdPart{}}
	for _, br := range md.Brokers {
		host, port, _ := strings.Cut(br.Name, ":")
		p, _ := strconv.Atoi(port)
		res.Brokers = append(res.Brokers, mdBroker{br.ID, host, int32(p)})
	}
	for _, tp := range md.Topics {
		if tp.Error != "" {
			t.Fatalf("kcat -L: topic %s: %s", tp.Topic, tp.Error)
		}
		ps := map[int32]mdPart{}
		for _, p := range tp.Partitions {
			if p.Error != "" {
				t.Fatalf("kcat -L: %s/%d: %s", tp.Topic, p.Partition, p.Error)
			}
			mp := mdPart{Leader: p.Leader, Replicas: []int32{}, ISR: []int32{}}
			for _, r := range p.Replicas {
				mp.Replicas = append(mp.Replicas, r.ID)
			}
			for _, r := range p.ISRs {
				mp.ISR = append(mp.ISR, r.ID)
			}
			ps[p.Partition] = mp
		}
		res.Topics[tp.Topic] = ps
	}
	return res
}

func kgoCodec(t *testing.T, name string) kgo.CompressionCodec {
	switch name {
	case "none", "":
		return kgo.NoCompression()
	case "gzip":
		return kgo.GzipCompression()
	case "snappy":
		return kgo.SnappyCompression()
	case "lz4":
		return kgo.Lz4Compression()
	case "zstd":
		return kgo.ZstdCompression()
	}
	t.Fatalf("unknown codec %q", name)
	return kgo.NoCompression()
}

// newKgo returns a kgo client closed when t ends. kgo compresses with
// snappy unless told otherwise.
func newKgo(t *testing.T, b *broker.Broker, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RequestTimeoutOverhead(10 * time.Second), kgo.RetryTimeout(20 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func runKgo(t *testing.T, b *broker.Broker, ops []op) []result {
	t.Helper()
	var res []result
	for _, o := range ops {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		switch o.Op {
		case "produce":
			res = append(res, kgoProduce(t, ctx, b, o))
		case "consume":
			res = append(res, kgoConsume(t, ctx, b, o))
		case "offsets":
			res = append(res, kgoOffsets(t, ctx, b, o))
		case "create", "delete", "metadata":
			res = append(res, kgoAdmin(t, ctx, b, o))
		default:
			t.Fatalf("kgo: unsupported op %q", o.Op)
		}
		cancel()
	}
	return res
}

func kgoProduce(t *testing.T, ctx context.Context, b *broker.Broker, o op) result {
	t.Helper()
	opts := []kgo.Opt{kgo.ProducerBatchCompression(kgoCodec(t, o.Codec)), kgo.RecordPartitioner(kgo.ManualPartitioner())}
	switch o.Acks {
	case -1:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case 0:
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	}
	cl := newKgo(t, b, opts...)
	defer cl.Close()
	var recs []*kgo.Record
	for _, r := range o.Records {
		kr := &kgo.Record{Topic: o.Topic, Partition: r.P, Key: r.K, Value: r.V}
		if r.TS != 0 {
			kr.Timestamp = time.UnixMilli(r.TS)
		}
		for _, h := range r.H {
			kr.Headers = append(kr.Headers, kgo.RecordHeader{Key: h.K, Value: h.V})
		}
		recs = append(recs, kr)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("kgo produce to %s: %v", o.Topic, err)
	}
	var res result
	for _, kr := range recs {
		res.Records = append(res.Records, rec{P: kr.Partition, O: kr.Offset, TS: kr.Timestamp.UnixMilli()})
	}
	return res
}

func kgoConsume(t *testing.T, ctx context.Context, b *broker.Broker, o op) result {
	t.Helper()
	cl := newKgo(t, b, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{o.Topic: {o.P: kgo.NewOffset().At(o.Offset)}}),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	defer cl.Close()
	timeout := time.Duration(o.Timeout * float64(time.Second))
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var res result
	for len(res.Records) < o.N && pctx.Err() == nil {
		fs := cl.PollRecords(pctx, o.N-len(res.Records))
		for _, e := range fs.Errors() {
			if !errors.Is(e.Err, context.DeadlineExceeded) {
				t.Fatalf("kgo consume %s/%d: %v", e.Topic, e.Partition, e.Err)
			}
		}
		fs.EachRecord(func(kr *kgo.Record) {
			r := rec{P: kr.Partition, O: kr.Offset, K: kr.Key, V: kr.Value, TS: kr.Timestamp.UnixMilli()}
			if kr.Attrs.TimestampType() == 1 {
				r.TSType = 1
			}
			for _, h := range kr.Headers {
				r.H = append(r.H, header{h.Key, h.Value})
			}
			res.Records = append(res.Records, r)
		})
	}
	return res
}

// kgoOffsets sends ListOffsets itself (kadm turns "no offset for this
// time" into the end offset), so the broker's answers are seen as they are.
func kgoOffsets(t *testing.T, ctx context.Context, b *broker.Broker, o op) result {
	t.Helper()
	cl := newKgo(t, b)
	defer cl.Close()
	list := func(ts int64) (int64, int64) {
		t.Helper()
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = o.Topic
		rp := kmsg.NewListOffsetsRequestTopicPartition()
		rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = o.P, ts, -1
		rt.Partitions = append(rt.Partitions, rp)
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatalf("kgo ListOffsets %s/%d time %d: %v", o.Topic, o.P, ts, err)
		}
		if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("kgo ListOffsets %s/%d: reply %+v", o.Topic, o.P, resp)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 {
			t.Fatalf("kgo ListOffsets %s/%d time %d: %v", o.Topic, o.P, ts, kerr.ErrorForCode(p.ErrorCode))
		}
		return p.Offset, p.Timestamp
	}
	res := result{}
	res.Earliest, _ = list(-2)
	res.Latest, _ = list(-1)
	for _, ts := range o.Times {
		off, when := list(ts)
		res.Times = append(res.Times, timeOffset{Offset: off, TS: &when})
	}
	return res
}

func kgoAdmin(t *testing.T, ctx context.Context, b *broker.Broker, o op) result {
	t.Helper()
	adm := kadm.NewClient(newKgo(t, b))
	defer adm.Close()
	code := func(err error) int16 {
		if err == nil {
			return 0
		}
		var ke *kerr.Error
		if !errors.As(err, &ke) {
			t.Fatalf("kadm %s: not a Kafka error: %v", o.Op, err)
		}
		return ke.Code
	}
	res := result{Errors: map[string]int16{}}
	switch o.Op {
	case "create":
		for _, nt := range o.Topics {
			rs, err := adm.CreateTopics(ctx, nt.Partitions, nt.RF, nil, nt.Name)
			if err != nil {
				t.Fatalf("kadm create %s: %v", nt.Name, err)
			}
			res.Errors[nt.Name] = code(rs[nt.Name].Err)
		}
	case "delete":
		for _, n := range o.Names {
			rs, err := adm.DeleteTopics(ctx, n)
			if err != nil {
				t.Fatalf("kadm delete %s: %v", n, err)
			}
			res.Errors[n] = code(rs[n].Err)
		}
	case "metadata":
		md, err := adm.Metadata(ctx)
		if err != nil {
			t.Fatalf("kadm metadata: %v", err)
		}
		res.Controller = md.Controller
		for _, br := range md.Brokers {
			res.Brokers = append(res.Brokers, mdBroker{br.NodeID, br.Host, br.Port})
		}
		res.Topics = map[string]map[int32]mdPart{}
		for name, td := range md.Topics {
			if td.Err != nil {
				t.Fatalf("kadm metadata: topic %s: %v", name, td.Err)
			}
			ps := map[int32]mdPart{}
			for p, pd := range td.Partitions {
				if pd.Err != nil {
					t.Fatalf("kadm metadata: %s/%d: %v", name, p, pd.Err)
				}
				ps[p] = mdPart{Leader: pd.Leader, Replicas: pd.Replicas, ISR: pd.ISR}
			}
			res.Topics[name] = ps
		}
	}
	return res
}

// mustCreate creates topics through kadm, each with the given partitions.
func mustCreate(t *testing.T, b *broker.Broker, partitions int32, names ...string) {
	t.Helper()
	var ops []op
	for _, n := range names {
		ops = append(ops, op{Op: "create", Topics: []newTopic{{Name: n, Partitions: partitions, RF: 1}}})
	}
	for i, r := range runKgo(t, b, ops) {
		if e := r.Errors[names[i]]; e != 0 {
			t.Fatalf("create %s: error %d (%v)", names[i], e, kerr.ErrorForCode(e))
		}
	}
}

// b64s shows bytes in messages.
func b64s(b []byte) string {
	if b == nil {
		return "null"
	}
	return base64.StdEncoding.EncodeToString(b)
}

func sortedTopics(m map[string]map[int32]mdPart) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

// kfakeDeviations are behaviours where kfake, the oracle the suite is
// validated against, differs from Apache Kafka 2.x. The suite checks
// Kafka's behaviour; against kfake these checks are logged, not failed.
var kfakeDeviations = map[string]string{
	"topic-name":        "kfake accepts any topic name; Kafka answers INVALID_TOPIC_EXCEPTION (17) outside [a-zA-Z0-9._-]{1,249}",
	"restart-empty-log": "kfake restarts a partition that retention emptied at offset 0; Kafka keeps its log end offset",
}

// deviation reports a failed check that is a known kfake deviation.
func deviation(t *testing.T, key, format string, args ...any) {
	t.Helper()
	if why, ok := kfakeDeviations[key]; ok && target == broker.KFake {
		t.Logf("known kfake deviation (%s): %s", why, fmt.Sprintf(format, args...))
		return
	}
	if _, ok := kfakeDeviations[key]; !ok {
		panic("unknown deviation key " + key)
	}
	t.Errorf(format, args...)
}
