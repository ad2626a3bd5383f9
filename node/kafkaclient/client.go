// Package kafkaclient is a Kafka client as a core: it speaks the Kafka wire
// protocol (franz-go's kmsg as codec) over an Env connection, so the
// simulator can run producer and consumer workloads against the broker over
// netsim. It behaves like the Java client and kgo where a broker can tell:
// ApiVersions first, then Metadata, then pipelined requests (at most
// MaxInflight workload requests at once) whose replies must come back in
// request order with matching correlation ids; a request that outlives its
// timeout, or a connection that dies, makes every outstanding request's
// outcome unknown, and the client reconnects.
//
// Produce sends one uncompressed RecordBatch v2 per request (acks 1 or -1,
// no idempotence); Fetch reads from an offset and hands back every batch
// decoded and verified (CRC-32C, record count, offsets), so a checker can
// judge what the broker served. Protocol breaches the client can see alone
// (replies out of order, undecodable replies, missing partitions in a reply)
// are reported through Config.OnViolation.
package kafkaclient

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node"
	"herd/node/frame"
)

// OpKind names the operations a workload can ask for.
type OpKind uint8

const (
	// Produce appends Values as one batch to Topic/Partition.
	Produce OpKind = iota + 1
	// Fetch reads Topic/Partition from Offset, at most MaxBytes.
	Fetch
	// CreateTopic creates Topic with Partitions partitions and Configs.
	CreateTopic
	// Metadata asks how many partitions Topic has (without creating it).
	Metadata
	// Idle asks for nothing now: the client asks again after Interval.
	Idle
)

func (k OpKind) String() string {
	switch k {
	case Produce:
		return "produce"
	case Fetch:
		return "fetch"
	case CreateTopic:
		return "create-topic"
	case Metadata:
		return "metadata"
	case Idle:
		return "idle"
	}
	return "op?"
}

// Op is one operation the workload asks for.
type Op struct {
	Kind      OpKind
	Topic     string
	Partition int32
	// Produce.
	Values [][]byte
	Acks   int16 // 1 or -1
	// Fetch.
	Offset   int64
	MaxBytes int32
	MaxWait  time.Duration // long-poll bound (MaxWaitMillis); 0 answers at once
	// MinVersion: speak at least this Fetch version, if both sides can,
	// instead of the connection's (v5 reports the log start offset).
	MinVersion int16
	// Unpaced: issue the next operation without waiting Interval (a
	// catch-up read).
	Unpaced bool
	// CreateTopic.
	Partitions int32
	Configs    [][2]string // name, value: a slice, so the wire order is fixed
}

// Result is what came back for an Op.
type Result struct {
	// Unknown: no reply (the connection died or the request timed out); a
	// produce may or may not have been appended.
	Unknown bool
	// Err is the Kafka error code of the partition (or topic) in the reply.
	Err int16
	// BaseOffset is the offset the broker gave a produced batch's first
	// record.
	BaseOffset int64
	// HighWatermark and LogStartOffset are the fetched partition's.
	HighWatermark  int64
	LogStartOffset int64
	// Batches are the fetched batches, decoded and verified.
	Batches []Batch
	// Partitions is the topic's partition count (Metadata).
	Partitions int32
}

// Planted bugs in the client's own reporting (Config.Bug): each distorts the
// history the checker sees, to prove the checker notices.
const (
	// BugShiftAck reports every acknowledged produce one offset later
	// than the broker said.
	BugShiftAck = "client-shift-ack"
	// BugForgetUnknown reports requests lost with their connection as
	// refused by the broker (a definite failure) instead of unknown.
	BugForgetUnknown = "client-forget-unknown"
	// BugReorder swaps the first two records of a fetched batch.
	BugReorder = "client-reorder"
	// BugSkipBatch drops the second batch of a fetch that returned three
	// or more.
	BugSkipBatch = "client-skip-batch"
)

// Config configures a client.
type Config struct {
	Name   string
	Broker string // host:port
	// Next produces the workload's next operation, or false when done.
	Next func(r *node.Rand) (Op, bool)
	// MaxInflight bounds workload requests outstanding at once (kgo's
	// default is 5).
	MaxInflight int
	// Interval paces operations.
	Interval time.Duration
	// RequestTimeout bounds the wait for a reply (beyond a fetch's own
	// MaxWait).
	RequestTimeout time.Duration
	// Invoke and Return record the history; id identifies an operation.
	Invoke func(id int, op Op)
	Return func(id int, op Op, r Result)
	// OnViolation reports a protocol breach (nil: the client halts).
	OnViolation func(msg string)
	// Bug switches on one of the planted reporting bugs above.
	Bug string
}

const (
	timerTimeout node.TimerName = "kafka/request-timeout"
	timerRetry   node.TimerName = "kafka/reconnect"
	timerNext    node.TimerName = "kafka/next"

	// maxFrame bounds a reply; fetches ask for far less.
	maxFrame = 16 << 20
	// maxInflightCap bounds MaxInflight whatever the configuration says,
	// so the pending queue is bounded.
	maxInflightCap = 64
)

// apiRange is a version range of one API key.
type apiRange struct{ min, max int16 }

// What this client can speak: the non-flexible versions with RecordBatch v2,
// plus ApiVersions v3 (flexible request, v0 response header).
var ourVersions = map[int16]apiRange{
	0:  {3, 8}, // Produce
	1:  {4, 11},
	3:  {1, 8},
	19: {2, 4},
}

// pending is one request awaiting its reply.
type pending struct {
	corr    int32
	key     int16
	version int16
	id      int // workload op id, or -1 for the client's own requests
	op      Op
	timeout time.Duration
}

type connState uint8

const (
	stDown       connState = iota // no connection; a reconnect is scheduled or due
	stConnecting                  // dialled, or waiting for ApiVersions
	stMetadata                    // waiting for the first Metadata
	stReady
)

// Client is the client core.
type Client struct {
	env node.Env
	cfg Config

	conn     node.ConnID
	in       *frame.Reader
	state    connState
	corr     int32
	pending  []pending
	versions map[int16]int16 // API key -> version used on this connection
	highest  map[int16]int16 // API key -> highest version both sides speak
	format   *kmsg.RequestFormatter

	opID     int
	inflight int
	done     bool
	// paced: the Interval timer is armed; nothing new is issued until it
	// fires, so fast replies (errors, say) cannot turn pacing into a hot
	// loop.
	paced bool
}

// New returns a Factory for clients.
func New(cfg Config) node.Factory {
	cfg.MaxInflight = min(max(cfg.MaxInflight, 1), maxInflightCap)
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 5 * time.Second
	}
	return func(env node.Env) node.Machine {
		return &Client{env: env, cfg: cfg, format: kmsg.NewRequestFormatter(kmsg.FormatterClientID(cfg.Name))}
	}
}

// Done reports whether the workload finished and nothing is outstanding.
func (c *Client) Done() bool { return c.done && c.inflight == 0 }

// Step implements node.Machine.
func (c *Client) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		c.dial()
	case node.EvConnected:
		if ev.Conn == c.conn {
			c.sendApiVersions()
		}
	case node.EvReceived:
		if ev.Conn == c.conn {
			c.received(ev.Data)
		}
	case node.EvClosed:
		if ev.Conn == c.conn {
			c.lost()
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerTimeout:
			if c.conn != 0 {
				c.env.Logf("%s: request timed out; reconnecting", c.cfg.Name)
				c.env.Close(c.conn)
				c.lost()
			}
		case timerRetry:
			c.dial()
		case timerNext:
			c.paced = false
			c.fill()
		}
	}
}

func (c *Client) violation(format string, args ...any) {
	msg := c.cfg.Name + ": " + fmt.Sprintf(format, args...)
	if c.cfg.OnViolation != nil {
		c.cfg.OnViolation(msg)
	} else {
		c.env.Halt(msg)
	}
}

func (c *Client) dial() {
	if c.conn != 0 {
		return
	}
	c.conn = c.env.Dial(c.cfg.Broker)
	c.in = frame.NewReader(maxFrame)
	c.state = stConnecting
	c.corr = 0
	c.versions = nil
	// The dial itself must not hang forever on a half-open path.
	c.env.SetTimer(timerTimeout, c.cfg.RequestTimeout)
}

// lost handles a dead connection: outstanding operations have unknown
// outcomes, and the client reconnects after a short backoff.
func (c *Client) lost() {
	c.conn = 0
	c.state = stDown
	c.env.CancelTimer(timerTimeout)
	for _, p := range c.pending {
		if p.id < 0 {
			continue
		}
		r := Result{Unknown: true}
		if c.cfg.Bug == BugForgetUnknown && p.key == 0 {
			r = Result{Err: 2} // CORRUPT_MESSAGE: "refused, not appended"
		}
		c.finish(p, r)
	}
	clear(c.pending)
	c.pending = c.pending[:0]
	c.env.SetTimer(timerRetry, c.env.Rand().Between(10*time.Millisecond, 200*time.Millisecond))
}

func (c *Client) finish(p pending, r Result) {
	c.inflight--
	c.env.Logf("%s: op %d %v %s-%d done: unknown=%v err=%d offset=%d hw=%d batches=%d", c.cfg.Name, p.id, p.op.Kind,
		p.op.Topic, p.op.Partition, r.Unknown, r.Err, r.BaseOffset, r.HighWatermark, len(r.Batches))
	if c.cfg.Return != nil {
		c.cfg.Return(p.id, p.op, r)
	}
}

// send frames req with the next correlation id and queues its reply slot.
func (c *Client) send(req kmsg.Request, id int, op Op, extra time.Duration) {
	c.corr++
	p := pending{corr: c.corr, key: req.Key(), version: req.GetVersion(), id: id, op: op,
		timeout: c.cfg.RequestTimeout + extra}
	c.env.Send(c.conn, c.format.AppendRequest(nil, req, c.corr))
	c.pending = append(c.pending, p)
	if len(c.pending) == 1 {
		c.env.SetTimer(timerTimeout, p.timeout)
	}
}

func (c *Client) sendApiVersions() {
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 3
	req.ClientSoftwareName = "herd-sim"
	req.ClientSoftwareVersion = "1.0"
	c.send(req, -1, Op{}, 0)
}

// ---- receiving ----

func (c *Client) received(data []byte) {
	c.in.Feed(data)
	for c.conn != 0 {
		body, ok, err := c.in.Next()
		if err != nil {
			c.violation("bad frame from the broker: %v", err)
			c.env.Close(c.conn)
			c.lost()
			return
		}
		if !ok {
			return
		}
		c.reply(body)
	}
}

func (c *Client) reply(body []byte) {
	if len(body) < 4 {
		c.violation("reply of %d bytes has no correlation id", len(body))
		c.drop()
		return
	}
	corr := int32(binary.BigEndian.Uint32(body))
	if len(c.pending) == 0 {
		c.violation("reply with correlation id %d and nothing outstanding", corr)
		c.drop()
		return
	}
	p := c.pending[0]
	if corr != p.corr {
		c.violation("reply with correlation id %d, expected %d: replies out of request order", corr, p.corr)
		c.drop()
		return
	}
	c.pending[0] = pending{}
	c.pending = c.pending[1:]
	if len(c.pending) == 0 {
		c.env.CancelTimer(timerTimeout)
	} else {
		// The next reply's clock starts now: it could not be sent before
		// this one.
		c.env.SetTimer(timerTimeout, c.pending[0].timeout)
	}
	resp := kmsg.ResponseForKey(p.key)
	resp.SetVersion(p.version)
	rest := body[4:]
	if resp.IsFlexible() && p.key != 18 {
		var ok bool
		if rest, ok = skipTags(rest); !ok {
			c.violation("%s v%d reply: malformed header tags", kmsg.NameForKey(p.key), p.version)
			c.drop()
			return
		}
	}
	if err := resp.ReadFrom(rest); err != nil {
		c.violation("%s v%d reply does not decode: %v", kmsg.NameForKey(p.key), p.version, err)
		c.drop()
		return
	}
	switch r := resp.(type) {
	case *kmsg.ApiVersionsResponse:
		c.apiVersions(r)
	case *kmsg.MetadataResponse:
		if c.state == stMetadata {
			c.state = stReady
		}
		if p.id >= 0 {
			c.finish(p, c.metadataResult(p, r))
		}
	case *kmsg.ProduceResponse:
		c.finish(p, c.produceResult(p, r))
	case *kmsg.FetchResponse:
		c.finish(p, c.fetchResult(p, r))
	case *kmsg.CreateTopicsResponse:
		res := Result{}
		if len(r.Topics) != 1 || r.Topics[0].Topic != p.op.Topic {
			c.violation("CreateTopics reply does not name topic %s", p.op.Topic)
			res.Unknown = true
		} else {
			res.Err = r.Topics[0].ErrorCode
		}
		c.finish(p, res)
	}
	c.fill()
}

// drop closes the connection after a breach.
func (c *Client) drop() {
	if c.conn != 0 {
		c.env.Close(c.conn)
		c.lost()
	}
}

func (c *Client) apiVersions(r *kmsg.ApiVersionsResponse) {
	if r.ErrorCode != 0 {
		c.violation("ApiVersions v3 refused with error %d", r.ErrorCode)
		c.drop()
		return
	}
	c.versions, c.highest = map[int16]int16{}, map[int16]int16{}
	for _, k := range r.ApiKeys {
		ours, ok := ourVersions[k.ApiKey]
		if !ok {
			continue
		}
		lo, hi := max(ours.min, k.MinVersion), min(ours.max, k.MaxVersion)
		if lo > hi {
			continue
		}
		// Each connection speaks a version drawn from the overlap, so a
		// run covers the versions both sides claim.
		c.versions[k.ApiKey] = lo + int16(c.env.Rand().IntN(int(hi-lo)+1))
		c.highest[k.ApiKey] = hi
	}
	for _, key := range []int16{0, 1, 3} {
		if _, ok := c.versions[key]; !ok {
			c.violation("the broker serves no %s version this client speaks", kmsg.NameForKey(key))
			c.drop()
			return
		}
	}
	req := kmsg.NewPtrMetadataRequest()
	req.Version = c.versions[3]
	req.Topics = nil // all topics
	if req.Version >= 4 {
		req.AllowAutoTopicCreation = false
	}
	c.state = stMetadata
	c.send(req, -1, Op{}, 0)
}

func (c *Client) produceResult(p pending, r *kmsg.ProduceResponse) Result {
	if len(r.Topics) != 1 || r.Topics[0].Topic != p.op.Topic || len(r.Topics[0].Partitions) != 1 ||
		r.Topics[0].Partitions[0].Partition != p.op.Partition {
		c.violation("Produce reply does not answer %s-%d alone", p.op.Topic, p.op.Partition)
		return Result{Unknown: true}
	}
	sp := r.Topics[0].Partitions[0]
	res := Result{Err: sp.ErrorCode, BaseOffset: sp.BaseOffset}
	if res.Err == 0 && res.BaseOffset < 0 {
		c.violation("Produce to %s-%d acknowledged at offset %d", p.op.Topic, p.op.Partition, res.BaseOffset)
	}
	if res.Err == 0 && c.cfg.Bug == BugShiftAck {
		res.BaseOffset++
	}
	return res
}

func (c *Client) metadataResult(p pending, r *kmsg.MetadataResponse) Result {
	if len(r.Topics) != 1 || r.Topics[0].Topic == nil || *r.Topics[0].Topic != p.op.Topic {
		c.violation("Metadata reply does not describe topic %s alone", p.op.Topic)
		return Result{Unknown: true}
	}
	t := &r.Topics[0]
	res := Result{Err: t.ErrorCode, Partitions: int32(len(t.Partitions))}
	for i, part := range t.Partitions {
		if part.Partition != int32(i) {
			c.violation("Metadata of %s lists partition %d in place %d", p.op.Topic, part.Partition, i)
		}
	}
	return res
}

func (c *Client) fetchResult(p pending, r *kmsg.FetchResponse) Result {
	if r.ErrorCode != 0 {
		return Result{Err: r.ErrorCode, HighWatermark: -1}
	}
	if len(r.Topics) != 1 || r.Topics[0].Topic != p.op.Topic || len(r.Topics[0].Partitions) != 1 ||
		r.Topics[0].Partitions[0].Partition != p.op.Partition {
		c.violation("Fetch reply does not answer %s-%d alone", p.op.Topic, p.op.Partition)
		return Result{Unknown: true}
	}
	sp := &r.Topics[0].Partitions[0]
	res := Result{Err: sp.ErrorCode, HighWatermark: sp.HighWatermark, LogStartOffset: sp.LogStartOffset}
	if res.Err == 0 {
		res.Batches = DecodeBatches(sp.RecordBatches)
	}
	switch c.cfg.Bug {
	case BugReorder:
		for i := range res.Batches {
			if rs := res.Batches[i].Records; len(rs) >= 2 {
				rs[0].Value, rs[1].Value = rs[1].Value, rs[0].Value
				break
			}
		}
	case BugSkipBatch:
		if len(res.Batches) >= 3 {
			res.Batches = append(res.Batches[:1], res.Batches[2:]...)
		}
	}
	return res
}

// skipTags skips a tagged-field section.
func skipTags(b []byte) ([]byte, bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)) {
		return nil, false
	}
	b = b[k:]
	for ; n > 0; n-- {
		if _, k = binary.Uvarint(b); k <= 0 {
			return nil, false
		}
		b = b[k:]
		size, k := binary.Uvarint(b)
		if k <= 0 || size > uint64(len(b)-k) {
			return nil, false
		}
		b = b[k+int(size):]
	}
	return b, true
}

// ---- the workload ----

func (c *Client) fill() {
	for c.state == stReady && !c.done && !c.paced && c.inflight < c.cfg.MaxInflight {
		op, ok := c.cfg.Next(c.env.Rand())
		if !ok {
			c.done = true
			return
		}
		if op.Kind == Idle {
			c.pace(max(c.cfg.Interval, time.Millisecond))
			return
		}
		c.opID++
		c.inflight++
		c.env.Logf("%s: op %d %v %s-%d offset=%d records=%d", c.cfg.Name, c.opID, op.Kind, op.Topic, op.Partition, op.Offset, len(op.Values))
		if c.cfg.Invoke != nil {
			c.cfg.Invoke(c.opID, op)
		}
		c.issue(c.opID, op)
		if c.cfg.Interval > 0 && !op.Unpaced {
			c.pace(c.cfg.Interval)
			return
		}
	}
}

func (c *Client) pace(d time.Duration) {
	c.paced = true
	c.env.SetTimer(timerNext, d)
}

func (c *Client) issue(id int, op Op) {
	switch op.Kind {
	case Produce:
		req := kmsg.NewPtrProduceRequest()
		req.Version = c.versions[0]
		req.Acks = op.Acks
		req.TimeoutMillis = int32(c.cfg.RequestTimeout / time.Millisecond)
		part := kmsg.NewProduceRequestTopicPartition()
		part.Partition = op.Partition
		part.Records = EncodeBatch(op.Values, c.env.WallClock())
		topic := kmsg.NewProduceRequestTopic()
		topic.Topic = op.Topic
		topic.Partitions = []kmsg.ProduceRequestTopicPartition{part}
		req.Topics = []kmsg.ProduceRequestTopic{topic}
		c.send(req, id, op, 0)
	case Fetch:
		req := kmsg.NewPtrFetchRequest()
		req.Version = c.versions[1]
		if op.MinVersion > req.Version && op.MinVersion <= c.highest[1] {
			req.Version = op.MinVersion
		}
		req.ReplicaID = -1
		req.MaxWaitMillis = int32(op.MaxWait / time.Millisecond)
		req.MinBytes = 1
		req.MaxBytes = max(op.MaxBytes, 1)
		req.SessionEpoch = -1 // no fetch session: a full request every time
		part := kmsg.NewFetchRequestTopicPartition()
		part.Partition = op.Partition
		part.FetchOffset = op.Offset
		part.PartitionMaxBytes = max(op.MaxBytes, 1)
		part.CurrentLeaderEpoch = -1
		part.LogStartOffset = -1
		topic := kmsg.NewFetchRequestTopic()
		topic.Topic = op.Topic
		topic.Partitions = []kmsg.FetchRequestTopicPartition{part}
		req.Topics = []kmsg.FetchRequestTopic{topic}
		c.send(req, id, op, op.MaxWait)
	case Metadata:
		req := kmsg.NewPtrMetadataRequest()
		req.Version = c.versions[3]
		t := kmsg.NewMetadataRequestTopic()
		t.Topic = kmsg.StringPtr(op.Topic)
		req.Topics = []kmsg.MetadataRequestTopic{t}
		// Before v4 a Metadata request may auto-create; from v4 the
		// client says it must not.
		req.AllowAutoTopicCreation = false
		c.send(req, id, op, 0)
	case CreateTopic:
		v, ok := c.versions[19]
		if !ok {
			c.violation("the broker serves no CreateTopics version this client speaks")
			c.finish(pending{id: id, op: op}, Result{Unknown: true})
			return
		}
		req := kmsg.NewPtrCreateTopicsRequest()
		req.Version = v
		req.TimeoutMillis = int32(c.cfg.RequestTimeout / time.Millisecond)
		t := kmsg.NewCreateTopicsRequestTopic()
		t.Topic = op.Topic
		t.NumPartitions = op.Partitions
		t.ReplicationFactor = 1
		for _, kv := range op.Configs {
			cfg := kmsg.NewCreateTopicsRequestTopicConfig()
			cfg.Name = kv[0]
			cfg.Value = kmsg.StringPtr(kv[1])
			t.Configs = append(t.Configs, cfg)
		}
		req.Topics = []kmsg.CreateTopicsRequestTopic{t}
		c.send(req, id, op, 0)
	default:
		c.violation("unknown op kind %d", op.Kind)
		c.finish(pending{id: id, op: op}, Result{Unknown: true})
	}
}
