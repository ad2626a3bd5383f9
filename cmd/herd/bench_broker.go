package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// herd bench broker drives any Kafka endpoint (herd's broker, Apache Kafka,
// kfake, Redpanda) through franz-go's kgo client, like Kafka's
// kafka-producer-perf-test, kafka-consumer-perf-test and EndToEndLatency:
//
//	produce  N records of B bytes as fast as the producers go; records/s,
//	         MB/s and produce latency (Produce call to acknowledgement)
//	consume  the topic from its start with direct partition assignment (no
//	         group); records/s and MB/s
//	e2e      records carrying their send time, read back by a consumer in
//	         the same process; end-to-end latency (send to receipt)
//
// MB is 2^20 bytes of record keys and values, as in Kafka's tools. The
// payload is one string of random uppercase letters per producer, as
// kafka-producer-perf-test sends, so compression has some work to do.

var brokerModes = []string{"produce", "consume", "e2e"}

const (
	// brokerProgressEvery paces progress lines on stderr.
	brokerProgressEvery = 5 * time.Second
	// brokerE2EHeader is the e2e payload's prefix: send time (UnixNano)
	// and sequence number.
	brokerE2EHeader = 16
)

type brokerConfig struct {
	mode           string
	brokers        []string
	topic          string
	partitions     int
	partitionsSet  bool // --partitions given: warn if an existing topic has another count
	replication    int
	records        int64
	size           int
	acks           int
	batchBytes     int
	linger         time.Duration
	compression    string
	producers      int
	consumers      int
	maxBuffered    int
	bufferBytes    int
	inflight       int
	fetchMaxBytes  int
	rate           float64
	timeout        time.Duration
	connectTimeout time.Duration
	json           bool
}

// parseBrokerFlags parses and validates the command line. Any error means a
// bad invocation (exit 2); flag.ErrHelp means --help was asked for.
func parseBrokerFlags(args []string, stderr io.Writer) (*brokerConfig, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			fmt.Fprintln(stderr, "usage: herd bench broker produce|consume|e2e --brokers host:port[,...] [flags]   (herd bench broker produce --help)")
			return nil, flag.ErrHelp
		}
		return nil, errors.New("want a mode: produce, consume or e2e")
	}
	c := &brokerConfig{mode: args[0]}
	ok := false
	for _, m := range brokerModes {
		ok = ok || m == c.mode
	}
	if !ok {
		return nil, fmt.Errorf("unknown mode %q (want produce, consume or e2e)", c.mode)
	}
	fs := flag.NewFlagSet("herd bench broker "+c.mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: herd bench broker %s --brokers host:port[,host:port...] [flags]\n\n", c.mode)
		switch c.mode {
		case "produce":
			fmt.Fprintln(stderr, "Produces --records records of --record-size bytes with --producers kgo clients and reports\nrecords/s, MB/s (MB = 2^20 bytes, as in Kafka's tools) and the latency from each Produce call to its\nacknowledgement. Flags:")
		case "consume":
			fmt.Fprintln(stderr, "Reads --topic from its start, every partition assigned directly (no consumer group) to one of\n--consumers kgo clients, and reports records/s and MB/s (MB = 2^20 bytes, as in Kafka's tools). Flags:")
		case "e2e":
			fmt.Fprintln(stderr, "Produces records stamped with their send time and reads them back in the same process;\nreports the end-to-end latency. With --rate 0 one record is in flight at a time. Flags:")
		}
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nThe clients run with GODEBUG=madvdontneed=0 (keeps freed response memory mapped; DESIGN.md,\nsection 11) unless GODEBUG already sets madvdontneed.")
	}
	brokers := fs.String("brokers", "", "comma-separated bootstrap host:port addresses")
	fs.StringVar(&c.topic, "topic", "herd-bench", "topic (produce and e2e create it if missing)")
	fs.IntVar(&c.partitions, "partitions", 6, "partitions of a topic created by produce or e2e")
	fs.IntVar(&c.replication, "replication-factor", 1, "replication factor of a created topic (-1: the broker's default)")
	defRecords := map[string]int64{"produce": 1_000_000, "consume": 0, "e2e": 10_000}[c.mode]
	fs.Int64Var(&c.records, "records", defRecords, map[string]string{
		"produce": "records to produce",
		"consume": "records to read (0: everything up to the end offsets found at the start)",
		"e2e":     "records to send and receive",
	}[c.mode])
	if c.mode != "consume" {
		fs.IntVar(&c.size, "record-size", map[string]int{"produce": 100, "e2e": 100}[c.mode], "bytes per record value")
		fs.IntVar(&c.acks, "acks", 1, "required acks: 0, 1 or -1 (all in-sync replicas)")
		fs.IntVar(&c.batchBytes, "batch-bytes", 1_000_000, "most bytes in one record batch (kgo ProducerBatchMaxBytes)")
		fs.StringVar(&c.compression, "compression", "none", "none, gzip, snappy, lz4 or zstd")
		fs.IntVar(&c.inflight, "max-inflight", 5, "produce requests in flight per broker (1 keeps records in order through retries)")
	}
	if c.mode == "produce" {
		fs.DurationVar(&c.linger, "linger", 5*time.Millisecond, "how long a partition's batch may wait to fill (kgo ProducerLinger)")
		fs.IntVar(&c.producers, "producers", 1, "producer clients; the records are split among them")
		fs.IntVar(&c.maxBuffered, "max-buffered", 100_000, "records a producer may have buffered and unacknowledged (kgo MaxBufferedRecords); Produce blocks beyond")
		fs.IntVar(&c.bufferBytes, "buffer-bytes", 32<<20, "record bytes a producer may have buffered and unacknowledged (kgo MaxBufferedBytes; Kafka's buffer.memory)")
	}
	if c.mode == "consume" {
		fs.IntVar(&c.consumers, "consumers", 1, "consumer clients; partition i is read by client i mod N (kgo has one fetch in flight per broker and client)")
	}
	if c.mode != "produce" {
		fs.IntVar(&c.fetchMaxBytes, "fetch-max-bytes", 50<<20, "most bytes per fetch response (per partition: a quarter of it)")
	}
	if c.mode == "e2e" {
		fs.Float64Var(&c.rate, "rate", 0, "records/s to send, paced (0: one record at a time, each sent when the last arrived)")
		fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "fail if a record has not arrived this long after it was sent")
	}
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 10*time.Second, "give up if no broker answers within this time")
	fs.BoolVar(&c.json, "json", false, "print one JSON object instead of the table")
	if err := fs.Parse(args[1:]); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	fs.Visit(func(f *flag.Flag) { c.partitionsSet = c.partitionsSet || f.Name == "partitions" })
	var err error
	if c.brokers, err = parseBrokerAddrs(*brokers); err != nil {
		return nil, err
	}
	switch {
	case c.topic == "" || len(c.topic) > 249 || strings.Trim(c.topic, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" || c.topic == "." || c.topic == "..":
		return nil, fmt.Errorf("--topic %q: want 1-249 of [a-zA-Z0-9._-]", c.topic)
	case c.partitions < 1 || c.partitions > 100_000:
		return nil, fmt.Errorf("--partitions %d: want 1..100000", c.partitions)
	case c.replication == 0 || c.replication < -1 || c.replication > 100:
		return nil, fmt.Errorf("--replication-factor %d: want -1 or 1..100", c.replication)
	case c.records < 0 || (c.mode != "consume" && c.records == 0):
		return nil, fmt.Errorf("--records %d: want at least 1", c.records)
	case c.mode != "consume" && (c.size < 0 || c.size > 100<<20):
		return nil, fmt.Errorf("--record-size %d: want 0..%d", c.size, 100<<20)
	case c.mode == "e2e" && c.size < brokerE2EHeader:
		return nil, fmt.Errorf("--record-size %d: e2e records carry a %d-byte timestamp and sequence number", c.size, brokerE2EHeader)
	case c.mode != "consume" && c.acks != 0 && c.acks != 1 && c.acks != -1:
		return nil, fmt.Errorf("--acks %d: want 0, 1 or -1", c.acks)
	case c.mode != "consume" && (c.batchBytes < 1024 || c.batchBytes > 1<<30):
		return nil, fmt.Errorf("--batch-bytes %d: want 1024..%d", c.batchBytes, 1<<30)
	case c.mode != "consume" && (c.inflight < 1 || c.inflight > 100):
		return nil, fmt.Errorf("--max-inflight %d: want 1..100", c.inflight)
	case c.linger < 0:
		return nil, fmt.Errorf("--linger %v: want 0 or more", c.linger)
	case c.mode == "produce" && (c.producers < 1 || c.producers > 1000):
		return nil, fmt.Errorf("--producers %d: want 1..1000", c.producers)
	case c.mode == "consume" && (c.consumers < 1 || c.consumers > 1000):
		return nil, fmt.Errorf("--consumers %d: want 1..1000", c.consumers)
	case c.mode == "produce" && c.maxBuffered < 1:
		return nil, fmt.Errorf("--max-buffered %d: want at least 1", c.maxBuffered)
	case c.mode == "produce" && c.bufferBytes < c.size:
		return nil, fmt.Errorf("--buffer-bytes %d: want at least --record-size", c.bufferBytes)
	case c.mode != "produce" && (c.fetchMaxBytes < 1024 || c.fetchMaxBytes > maxFetchMaxBytes):
		return nil, fmt.Errorf("--fetch-max-bytes %d: want 1024..%d", c.fetchMaxBytes, maxFetchMaxBytes)
	case c.rate < 0 || math.IsInf(c.rate, 0) || math.IsNaN(c.rate):
		return nil, fmt.Errorf("--rate %v: want 0 or more", c.rate)
	case c.mode == "e2e" && c.timeout <= 0:
		return nil, fmt.Errorf("--timeout %v: want more than 0", c.timeout)
	case c.connectTimeout <= 0:
		return nil, fmt.Errorf("--connect-timeout %v: want more than 0", c.connectTimeout)
	}
	if c.mode != "consume" {
		if _, err := brokerCodec(c.compression); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// maxFetchMaxBytes bounds --fetch-max-bytes so that brokerMaxRead stays
// within what kgo allows (1 GiB).
const maxFetchMaxBytes = 896 << 20

// brokerMaxRead is the largest response the consumer accepts: a Fetch
// response holds up to fetchMax bytes of records plus its fields, and its
// first batch may exceed the limit (KIP-74). kgo's default, 100 MiB, made
// --fetch-max-bytes 104857600 hang: every response was refused, and
// fetched again.
func brokerMaxRead(fetchMax int) int32 {
	return int32(min(fetchMax+fetchMax/8+16<<20, 1<<30))
}

// parseBrokerAddrs parses --brokers; the port defaults to Kafka's 9092.
func parseBrokerAddrs(s string) ([]string, error) {
	return parseHostPorts("--brokers", s, "9092", "127.0.0.1:9092")
}

func brokerCodec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("--compression %q: want none, gzip, snappy, lz4 or zstd", name)
}

// benchBroker is `herd bench broker`: exit 0 on success, 1 if the brokers
// cannot be reached or requests fail, 2 on a bad command line.
func benchBroker(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseBrokerFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "herd bench broker:", err)
		return 2
	}
	// The first Ctrl-C stops the run (and reports what was done); a second
	// one kills.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)
	b := &brokerBench{cfg: cfg, stdout: stdout, stderr: &lockedWriter{w: stderr}}
	if err := b.run(ctx); err != nil {
		fmt.Fprintf(b.stderr, "herd bench broker %s: %v\n", cfg.mode, err)
		return 1
	}
	return 0
}

type brokerBench struct {
	cfg    *brokerConfig
	stdout io.Writer
	stderr io.Writer
	dialer *kafkaDialer
}

// kafkaDialer remembers the last dial error, so that a broker nobody can
// reach is reported as "connection refused", not as a timeout.
type kafkaDialer struct {
	mu      sync.Mutex
	lastErr error
	dialed  bool
}

func (d *kafkaDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, host)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.lastErr = err
	} else {
		d.dialed = true
	}
	return c, err
}

func (d *kafkaDialer) state() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dialed, d.lastErr
}

// reexecBenchBroker runs `herd bench broker` again in the same process
// (execve, so the pid stays) with madvdontneed=0 added to GODEBUG, unless
// GODEBUG already sets madvdontneed: the setting is read only at start.
// Why: kgo reads every response into a new slice, up to 50 MiB for a
// fetch, and with its default, MADV_DONTNEED, Go's background scavenger
// hands the freed pages back to the kernel as fast as the consumer frees
// them (657 MiB over a 2 GB consume), so nearly every new response took
// fresh page faults and the kernel's zeroing: about 150 k faults and 2.5 s
// of system time per 2 GB consumed, half of the client's CPU, which made
// the client, not the broker, the limit. With MADV_FREE the pages stay
// mapped until the kernel needs them. Producing gains too (fewer faults for
// the batches it builds), and it is only the benchmark client: servers keep
// Go's default, so that their resident memory is what they use.
func reexecBenchBroker() {
	if len(os.Args) < 3 || os.Args[1] != "bench" || os.Args[2] != "broker" {
		return
	}
	godebug, ok := benchBrokerGodebug(os.Getenv("GODEBUG"))
	if !ok {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return // run as is
	}
	os.Setenv("GODEBUG", godebug)
	err = syscall.Exec(exe, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "herd bench broker: running without GODEBUG=%s (%v)\n", godebug, err)
}

// benchBrokerGodebug is the GODEBUG value herd bench broker runs with given
// the current one, and false if the current one stands.
func benchBrokerGodebug(cur string) (string, bool) {
	for _, kv := range strings.Split(cur, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "madvdontneed=") {
			return cur, false
		}
	}
	if cur == "" {
		return "madvdontneed=0", true
	}
	return cur + ",madvdontneed=0", true
}

// client makes a kgo client with the common options plus opts.
func (b *brokerBench) client(opts ...kgo.Opt) (*kgo.Client, error) {
	base := []kgo.Opt{
		kgo.SeedBrokers(b.cfg.brokers...),
		kgo.Dialer(b.dialer.dial),
		kgo.ClientID("herd-bench"),
		kgo.MetadataMinAge(time.Second),
	}
	return kgo.NewClient(append(base, opts...)...)
}

// producerOpts are the producer settings tuned for throughput: big batches,
// a short linger, many buffered records and several requests in flight.
func (b *brokerBench) producerOpts(linger time.Duration, maxBuffered, bufferBytes int) []kgo.Opt {
	c := b.cfg
	codec, _ := brokerCodec(c.compression)
	opts := []kgo.Opt{
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerBatchMaxBytes(int32(c.batchBytes)),
		kgo.ProducerLinger(linger),
		kgo.MaxBufferedRecords(maxBuffered),
		kgo.MaxBufferedBytes(bufferBytes),
		kgo.MaxProduceRequestsInflightPerBroker(c.inflight),
		kgo.ProduceRequestTimeout(30 * time.Second),
		kgo.RecordRetries(10),
	}
	// Idempotence is off, as in Kafka's perf tools before 3.0: kgo allows
	// only one request in flight per broker with it, and acks other than
	// -1 cannot use it at all.
	opts = append(opts, kgo.DisableIdempotentWrite())
	switch c.acks {
	case -1:
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case 1:
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()))
	case 0:
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()))
	}
	return opts
}

func (b *brokerBench) run(ctx context.Context) error {
	b.dialer = &kafkaDialer{}
	admin, err := b.client()
	if err != nil {
		return err
	}
	defer admin.Close()
	parts, err := b.connect(ctx, admin)
	if err != nil {
		return err
	}
	switch b.cfg.mode {
	case "produce":
		return b.produce(ctx, parts)
	case "consume":
		return b.consume(ctx, admin, parts)
	default:
		return b.e2e(ctx, admin, parts)
	}
}

// connect asks for the topic's metadata within --connect-timeout, creates
// the topic if it is missing (produce, e2e) and returns its partitions.
func (b *brokerBench) connect(ctx context.Context, admin *kgo.Client) ([]int32, error) {
	c := b.cfg
	cctx, cancel := context.WithTimeout(ctx, c.connectTimeout)
	defer cancel()
	parts, err := b.metadata(cctx, admin)
	if err != nil {
		if ctx.Err() != nil {
			return nil, errors.New("interrupted")
		}
		if cctx.Err() != nil {
			dialed, dialErr := b.dialer.state()
			why := "connected, but got no Metadata reply"
			if !dialed && dialErr != nil {
				why = dialErr.Error()
			} else if !errors.Is(err, context.DeadlineExceeded) {
				why = err.Error()
			}
			return nil, fmt.Errorf("no Kafka broker answered within %v at %s: %s", c.connectTimeout, strings.Join(c.brokers, ","), why)
		}
		return nil, err
	}
	if parts != nil {
		if c.mode != "consume" && c.partitionsSet && len(parts) != c.partitions {
			fmt.Fprintf(b.stderr, "herd bench broker: topic %s exists with %d partitions (not --partitions %d); using it as it is\n", c.topic, len(parts), c.partitions)
		}
		return parts, nil
	}
	if c.mode == "consume" {
		return nil, fmt.Errorf("topic %s does not exist (run herd bench broker produce first)", c.topic)
	}
	req := kmsg.NewPtrCreateTopicsRequest()
	req.TimeoutMillis = int32(c.connectTimeout / time.Millisecond)
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = c.topic, int32(c.partitions), int16(c.replication)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(cctx, admin)
	if err != nil {
		return nil, fmt.Errorf("creating topic %s: %w", c.topic, err)
	}
	if len(resp.Topics) != 1 {
		return nil, fmt.Errorf("creating topic %s: %d topics in the reply", c.topic, len(resp.Topics))
	}
	if e := kerr.ErrorForCode(resp.Topics[0].ErrorCode); e != nil && !errors.Is(e, kerr.TopicAlreadyExists) {
		return nil, fmt.Errorf("creating topic %s: %w", c.topic, e)
	}
	// Wait until the metadata shows every partition with a leader.
	for {
		parts, err := b.metadata(cctx, admin)
		if err == nil && parts != nil {
			return parts, nil
		}
		if cctx.Err() != nil {
			return nil, fmt.Errorf("topic %s created, but its partitions have no leader within %v (%v)", c.topic, c.connectTimeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metadata returns the topic's partitions in order, nil if the topic does
// not exist, or an error (also if some partition has no leader yet).
func (b *brokerBench) metadata(ctx context.Context, admin *kgo.Client) ([]int32, error) {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(b.cfg.topic)
	req.Topics = append(req.Topics, rt)
	req.AllowAutoTopicCreation = false
	resp, err := req.RequestWith(ctx, admin)
	if err != nil {
		return nil, err
	}
	if len(resp.Topics) != 1 {
		return nil, fmt.Errorf("metadata: %d topics in the reply", len(resp.Topics))
	}
	t := resp.Topics[0]
	if e := kerr.ErrorForCode(t.ErrorCode); e != nil {
		if errors.Is(e, kerr.UnknownTopicOrPartition) {
			return nil, nil
		}
		return nil, fmt.Errorf("metadata for %s: %w", b.cfg.topic, e)
	}
	parts := make([]int32, len(t.Partitions))
	seen := make([]bool, len(t.Partitions))
	for _, p := range t.Partitions {
		if p.Partition < 0 || int(p.Partition) >= len(parts) || seen[p.Partition] {
			return nil, fmt.Errorf("metadata for %s: partitions are not 0..%d", b.cfg.topic, len(parts)-1)
		}
		if e := kerr.ErrorForCode(p.ErrorCode); e != nil || p.Leader < 0 {
			return nil, fmt.Errorf("metadata for %s: partition %d: leader %d, %v", b.cfg.topic, p.Partition, p.Leader, e)
		}
		seen[p.Partition] = true
		parts[p.Partition] = p.Partition
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("metadata for %s: no partitions", b.cfg.topic)
	}
	return parts, nil
}

// payload returns size random uppercase letters from a fixed seed.
func benchPayload(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 0x6865726462656e63))
	p := make([]byte, size)
	for i := range p {
		p[i] = byte('A' + r.IntN(26))
	}
	return p
}

// brokerReport is the --json line of one run. Latencies are in
// microseconds (produce: Produce call to acknowledgement, none with acks=0;
// e2e: send to receipt); records and bytes count what succeeded.
type brokerReport struct {
	Mode          string   `json:"mode"`
	Brokers       []string `json:"brokers"`
	Topic         string   `json:"topic"`
	Partitions    int      `json:"partitions"`
	Records       int64    `json:"records"`
	Bytes         int64    `json:"bytes"`
	RecordSize    int      `json:"record_size,omitempty"`
	Acks          *int     `json:"acks,omitempty"`
	Compression   string   `json:"compression,omitempty"`
	Producers     int      `json:"producers,omitempty"`
	Errors        int64    `json:"errors"`
	Seconds       float64  `json:"seconds"`
	RecordsPerSec float64  `json:"records_per_sec"`
	MBPerSec      float64  `json:"mb_per_sec"`
	MeanUs        float64  `json:"mean_us,omitempty"`
	P50Us         float64  `json:"p50_us,omitempty"`
	P99Us         float64  `json:"p99_us,omitempty"`
	P999Us        float64  `json:"p999_us,omitempty"`
	MaxUs         float64  `json:"max_us,omitempty"`
}

// report prints the result line (table or JSON); hist may be nil.
func (b *brokerBench) report(partitions int, records, bytes, errs int64, elapsed time.Duration, hist *latHist) {
	c := b.cfg
	secs := max(elapsed.Seconds(), 1e-9)
	rate, mbs := float64(records)/secs, float64(bytes)/(1<<20)/secs
	if c.json {
		r := brokerReport{Mode: c.mode, Brokers: c.brokers, Topic: c.topic, Partitions: partitions, Records: records,
			Bytes: bytes, Errors: errs, Seconds: math.Round(secs*1000) / 1000,
			RecordsPerSec: math.Round(rate*10) / 10, MBPerSec: math.Round(mbs*100) / 100}
		if c.mode != "consume" {
			acks := c.acks
			r.RecordSize, r.Acks, r.Compression = c.size, &acks, c.compression
		}
		if c.mode == "produce" {
			r.Producers = c.producers
		}
		if hist != nil && hist.n > 0 {
			us := func(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)*10) / 10 }
			r.MeanUs, r.P50Us, r.P99Us, r.P999Us, r.MaxUs = us(hist.mean()), us(hist.quantile(0.5)), us(hist.quantile(0.99)), us(hist.quantile(0.999)), us(hist.max)
		}
		line, _ := json.Marshal(r)
		fmt.Fprintf(b.stdout, "%s\n", line)
		return
	}
	lat := func(q float64) string {
		if hist == nil || hist.n == 0 {
			return "-"
		}
		return hist.quantile(q).Round(time.Microsecond).String()
	}
	fmt.Fprintf(b.stdout, "%-8s %10s %9s %11s %9s %10s %10s %10s %7s\n", "mode", "records", "time", "rec/s", "MB/s", "p50", "p99", "p999", "errors")
	fmt.Fprintf(b.stdout, "%-8s %10d %8.2fs %11.0f %9.1f %10s %10s %10s %7d\n", c.mode, records, secs, rate, mbs, lat(0.5), lat(0.99), lat(0.999), errs)
}

// progress prints the running count every brokerProgressEvery until done
// is closed.
func (b *brokerBench) progress(what string, n *atomic.Int64, start time.Time, done <-chan struct{}) {
	t := time.NewTicker(brokerProgressEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			k := n.Load()
			fmt.Fprintf(b.stderr, "%s: %d records, %.0f/s so far\n", what, k, float64(k)/time.Since(start).Seconds())
		}
	}
}

// produce runs --producers clients, each producing its share of --records
// as fast as its buffer allows.
func (b *brokerBench) produce(ctx context.Context, parts []int32) error {
	c := b.cfg
	if !c.json {
		fmt.Fprintf(b.stdout, "herd bench broker produce: %s, topic %s (%d partitions), %d records x %d B, acks=%d, compression %s, %d producer(s), batch %d B, linger %v, buffer %d records/%d B, %d in flight\n",
			strings.Join(c.brokers, ","), c.topic, len(parts), c.records, c.size, c.acks, c.compression, c.producers, c.batchBytes, c.linger, c.maxBuffered, c.bufferBytes, c.inflight)
	}
	type producer struct {
		cl   *kgo.Client
		mu   sync.Mutex
		hist latHist
		n    int64
	}
	ps := make([]*producer, c.producers)
	for i := range ps {
		cl, err := b.client(b.producerOpts(c.linger, c.maxBuffered, c.bufferBytes)...)
		if err != nil {
			for _, p := range ps[:i] {
				p.cl.Close()
			}
			return err
		}
		ps[i] = &producer{cl: cl, n: c.records / int64(c.producers)}
		if int64(i) < c.records%int64(c.producers) {
			ps[i].n++
		}
	}
	defer func() {
		for _, p := range ps {
			p.cl.Close()
		}
	}()
	var acked, errs atomic.Int64
	var errMu sync.Mutex
	var firstErr error
	done := make(chan struct{})
	start := time.Now()
	go b.progress("produce", &acked, start, done)
	var wg sync.WaitGroup
	for i, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := benchPayload(c.size, uint64(i))
			// One promise for all records: the record's Timestamp is its
			// Produce call time, so nothing is allocated per record for it.
			promise := func(r *kgo.Record, err error) {
				lat := time.Since(r.Timestamp)
				if err != nil {
					errs.Add(1)
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					return
				}
				acked.Add(1)
				if c.acks != 0 {
					p.mu.Lock()
					p.hist.record(lat)
					p.mu.Unlock()
				}
			}
			for k := int64(0); k < p.n && ctx.Err() == nil && errs.Load() == 0; k++ {
				p.cl.Produce(ctx, &kgo.Record{Topic: c.topic, Value: payload, Timestamp: time.Now()}, promise)
			}
			p.cl.Flush(context.WithoutCancel(ctx))
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(done)
	var hist latHist
	for _, p := range ps {
		hist.merge(&p.hist)
	}
	var h *latHist
	if c.acks != 0 {
		h = &hist
	}
	n := acked.Load()
	b.report(len(parts), n, n*int64(c.size), errs.Load(), elapsed, h)
	switch {
	case errs.Load() > 0:
		return fmt.Errorf("%d records failed; first: %v", errs.Load(), firstErr)
	case ctx.Err() != nil:
		return errors.New("interrupted")
	}
	return nil
}

// endOffsets lists the start and end offsets of every partition.
func (b *brokerBench) offsets(ctx context.Context, admin *kgo.Client, parts []int32) (start, end map[int32]int64, err error) {
	list := func(ts int64) (map[int32]int64, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.ReplicaID = -1
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = b.cfg.topic
		for _, p := range parts {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp, rp.CurrentLeaderEpoch = p, ts, -1
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		// kgo splits the request by partition leader and merges the replies.
		resp, err := req.RequestWith(ctx, admin)
		if err != nil {
			return nil, err
		}
		out := map[int32]int64{}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
					return nil, fmt.Errorf("partition %d: %w", p.Partition, e)
				}
				out[p.Partition] = p.Offset
			}
		}
		if len(out) != len(parts) {
			return nil, fmt.Errorf("%d of %d partitions in the reply", len(out), len(parts))
		}
		return out, nil
	}
	if start, err = list(-2); err != nil {
		return nil, nil, fmt.Errorf("listing start offsets: %w", err)
	}
	if end, err = list(-1); err != nil {
		return nil, nil, fmt.Errorf("listing end offsets: %w", err)
	}
	return start, end, nil
}

// consume reads every partition from its start offset up to the end
// offset found before starting (or --records records), with --consumers
// clients, each assigned every N-th partition that holds records.
func (b *brokerBench) consume(ctx context.Context, admin *kgo.Client, parts []int32) error {
	c := b.cfg
	startOffs, endOffs, err := b.offsets(ctx, admin, parts)
	if err != nil {
		return err
	}
	var available int64
	var withData []int32
	for _, p := range parts {
		available += endOffs[p] - startOffs[p]
		if endOffs[p] > startOffs[p] {
			withData = append(withData, p)
		}
	}
	want := c.records
	if want == 0 {
		want = available
	}
	if available == 0 || want > available {
		return fmt.Errorf("topic %s holds %d records, want %d (run herd bench broker produce first)", c.topic, available, want)
	}
	nc := min(c.consumers, len(withData))
	if !c.json {
		fmt.Fprintf(b.stdout, "herd bench broker consume: %s, topic %s (%d partitions), %d records, fetch max %d B, %d consumer(s)\n",
			strings.Join(c.brokers, ","), c.topic, len(parts), want, c.fetchMaxBytes, nc)
	}
	type share struct {
		assign map[int32]kgo.Offset
		holds  int64 // records up to the end offsets
		cl     *kgo.Client
	}
	shares := make([]share, nc)
	for i, p := range withData {
		sh := &shares[i%nc]
		if sh.assign == nil {
			sh.assign = map[int32]kgo.Offset{}
		}
		sh.assign[p] = kgo.NewOffset().At(startOffs[p])
		sh.holds += endOffs[p] - startOffs[p]
	}
	for i := range shares {
		cl, err := b.client(
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{c.topic: shares[i].assign}),
			kgo.FetchMaxBytes(int32(c.fetchMaxBytes)),
			kgo.BrokerMaxReadBytes(brokerMaxRead(c.fetchMaxBytes)),
			kgo.FetchMaxPartitionBytes(int32(max(c.fetchMaxBytes/4, 1024))),
			kgo.FetchMaxWait(500*time.Millisecond),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		)
		if err != nil {
			for _, sh := range shares[:i] {
				sh.cl.Close()
			}
			return err
		}
		shares[i].cl = cl
	}
	defer func() {
		for _, sh := range shares {
			sh.cl.Close()
		}
	}()
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	var n, bytes atomic.Int64
	var mu sync.Mutex
	var fetchErr error
	done := make(chan struct{})
	start := time.Now()
	go b.progress("consume", &n, start, done)
	defer close(done)
	var wg sync.WaitGroup
	for i := range shares {
		sh := &shares[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got int64
			for got < sh.holds && n.Load() < want && cctx.Err() == nil {
				fs := sh.cl.PollFetches(cctx)
				fs.EachError(func(t string, p int32, err error) {
					if errors.Is(err, context.Canceled) {
						return
					}
					mu.Lock()
					if fetchErr == nil {
						fetchErr = fmt.Errorf("fetching %s/%d: %w", t, p, err)
					}
					mu.Unlock()
					stop()
				})
				k, kb := int64(0), int64(0)
				fs.EachRecord(func(r *kgo.Record) {
					k++
					kb += int64(len(r.Key) + len(r.Value))
				})
				got += k
				bytes.Add(kb)
				if n.Add(k) >= want {
					stop()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.report(len(parts), n.Load(), bytes.Load(), 0, elapsed, nil)
	switch {
	case fetchErr != nil:
		return fetchErr
	case ctx.Err() != nil:
		return errors.New("interrupted")
	}
	return nil
}

// e2e sends records stamped with their send time and sequence number and
// measures when the consumer, positioned at the end offsets beforehand,
// receives each.
func (b *brokerBench) e2e(ctx context.Context, admin *kgo.Client, parts []int32) error {
	c := b.cfg
	_, endOffs, err := b.offsets(ctx, admin, parts)
	if err != nil {
		return err
	}
	assign := map[int32]kgo.Offset{}
	for _, p := range parts {
		assign[p] = kgo.NewOffset().At(endOffs[p])
	}
	if !c.json {
		pace := "one record in flight"
		if c.rate > 0 {
			pace = fmt.Sprintf("%.0f records/s", c.rate)
		}
		fmt.Fprintf(b.stdout, "herd bench broker e2e: %s, topic %s (%d partitions), %d records x %d B, acks=%d, compression %s, %s\n",
			strings.Join(c.brokers, ","), c.topic, len(parts), c.records, c.size, c.acks, c.compression, pace)
	}
	cons, err := b.client(
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{c.topic: assign}),
		kgo.FetchMaxWait(100*time.Millisecond),
		kgo.FetchMaxBytes(int32(c.fetchMaxBytes)),
		kgo.BrokerMaxReadBytes(brokerMaxRead(c.fetchMaxBytes)),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	if err != nil {
		return err
	}
	defer cons.Close()
	// linger 0: each record goes out at once, as a latency test wants.
	prod, err := b.client(b.producerOpts(0, 10_000, 32<<20)...)
	if err != nil {
		return err
	}
	defer prod.Close()

	payload := benchPayload(c.size, 99)
	seen := make([]bool, c.records)
	var received atomic.Int64
	arrived := make(chan int64, 1024)
	var hist latHist
	var consErr error
	var prodErrs atomic.Int64
	var errMu sync.Mutex
	var firstProdErr error
	cctx, cancelCons := context.WithCancel(ctx)
	defer cancelCons()
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		for received.Load() < c.records && cctx.Err() == nil {
			fs := cons.PollFetches(cctx)
			now := time.Now()
			fs.EachError(func(t string, p int32, err error) {
				if !errors.Is(err, context.Canceled) && consErr == nil {
					consErr = fmt.Errorf("fetching %s/%d: %w", t, p, err)
					cancelCons()
				}
			})
			fs.EachRecord(func(r *kgo.Record) {
				if len(r.Value) < brokerE2EHeader {
					return // someone else's record
				}
				sent := int64(binary.BigEndian.Uint64(r.Value))
				seq := int64(binary.BigEndian.Uint64(r.Value[8:]))
				if seq < 0 || seq >= c.records || seen[seq] {
					return // another run's, or a duplicate from a retry
				}
				seen[seq] = true
				hist.record(now.Sub(time.Unix(0, sent)))
				received.Add(1)
				select {
				case arrived <- seq:
				default:
				}
			})
		}
	}()
	done := make(chan struct{})
	start := time.Now()
	go b.progress("e2e", &received, start, done)
	var interval time.Duration
	if c.rate > 0 {
		interval = time.Duration(float64(time.Second) / c.rate)
	}
	timeout := time.NewTimer(c.timeout)
	defer timeout.Stop()
	var failure error
	for seq := int64(0); seq < c.records && failure == nil; seq++ {
		if interval > 0 {
			if d := time.Until(start.Add(time.Duration(seq) * interval)); d > 0 {
				time.Sleep(d)
			}
		}
		v := make([]byte, c.size)
		copy(v[brokerE2EHeader:], payload[brokerE2EHeader:])
		binary.BigEndian.PutUint64(v, uint64(time.Now().UnixNano()))
		binary.BigEndian.PutUint64(v[8:], uint64(seq))
		prod.Produce(ctx, &kgo.Record{Topic: c.topic, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				prodErrs.Add(1)
				errMu.Lock()
				if firstProdErr == nil {
					firstProdErr = err
				}
				errMu.Unlock()
			}
		})
		if interval > 0 {
			if ctx.Err() != nil || consCtxDone(cctx) {
				failure = errors.New("stopped")
			}
			continue
		}
		// Closed loop: wait for this record before sending the next.
		timeout.Reset(c.timeout)
	wait:
		for {
			select {
			case got := <-arrived:
				if got == seq {
					break wait
				}
			case <-timeout.C:
				failure = fmt.Errorf("record %d did not arrive within %v", seq, c.timeout)
				break wait
			case <-cctx.Done():
				failure = errors.New("stopped")
				break wait
			}
		}
	}
	if failure == nil {
		// Paced mode: wait for the stragglers.
		deadline := time.After(c.timeout)
	drain:
		for received.Load() < c.records {
			select {
			case <-arrived:
			case <-consDone:
				break drain
			case <-deadline:
				failure = fmt.Errorf("%d of %d records did not arrive within %v of the last send", c.records-received.Load(), c.records, c.timeout)
				break drain
			}
		}
	}
	elapsed := time.Since(start)
	cancelCons()
	<-consDone
	close(done)
	prod.Flush(context.WithoutCancel(ctx))
	n := received.Load()
	b.report(len(parts), n, n*int64(c.size), prodErrs.Load(), elapsed, &hist)
	switch {
	case prodErrs.Load() > 0:
		return fmt.Errorf("%d records failed; first: %v", prodErrs.Load(), firstProdErr)
	case consErr != nil:
		return consErr
	case ctx.Err() != nil:
		return errors.New("interrupted")
	case failure != nil:
		return failure
	}
	return nil
}

func consCtxDone(ctx context.Context) bool {
	select {
	case <-ctx.Done():
		return true
	default:
		return false
	}
}
