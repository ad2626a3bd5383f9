package sim

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"herd/checker"
	"herd/node"
	"herd/node/broker"
	"herd/node/broker/partlog"
	"herd/node/kafkaclient"
)

// The broker scenario runs one Kafka-compatible broker (node/broker, its
// logs in partlog on the simulated disk) with 2-4 Kafka clients (package
// kafkaclient, speaking the Kafka protocol over netsim) that create topics,
// produce with acks 1 and -1, retry produces whose outcome is unknown, and
// fetch from chosen offsets, under every fault a single-copy log survives.
// checker.KafkaLog judges each answer as it arrives: whole, valid, dense
// batches; nothing fetched that was never produced; and on the topics that
// fsync every batch (flush.messages=1: the broker default here), no offset
// ever holding two records, no duplicates except after unknown outcomes, no
// acknowledged record lost and the high watermark never going back. After
// the faults heal, every client finishes its produces and scans every
// partition, and Final requires every acknowledged record read back.
//
// Topics: "durable" (3 partitions, created with CreateTopics), "auto" (2
// partitions, auto-created by the first produce), "lazy" (1 partition,
// flush.messages=Long.MAX_VALUE: acknowledged once in the page cache, so a
// power loss may take back what was acknowledged before it, but a kill or a
// halt may not: the same checks hold there between power losses) and
// "retained" (1 partition, 1 KiB segments, retention.bytes=3072: the log
// start moves, never back, and what is below it may be gone).

// brokerProfile: no corruption, misdirected writes or wipes, which a single
// copy cannot survive (as the demo's single-copy log).
var brokerProfile = FaultProfile{Crash: true, Kill: true, Pause: true, Clock: true, Partition: true,
	Clog: true, ConnReset: true, DiskErrors: true}

// brokerClientBugs are planted in kafkaclient's reporting: the broker is
// right, the history the checker sees is not.
var brokerClientBugs = map[string]string{
	kafkaclient.BugShiftAck:      "the client reports every acknowledged offset one too high: offsets hold two records, acknowledged records look lost",
	kafkaclient.BugForgetUnknown: "the client reports produces lost with their connection as refused: their retries look like duplicates the broker made",
	kafkaclient.BugReorder:       "the client swaps two fetched records: an offset holds a record other than the one acknowledged there",
	kafkaclient.BugSkipBatch:     "the client drops a fetched batch from the middle of a fetch: offsets not dense",
}

// brokerDiskBugLyingFsync is planted in the broker's environment, not its
// code: its disk reports every fsync (of a file or a directory) done without
// making anything durable, so a power loss takes back what the broker
// acknowledged. To the checker it is what ack-before-flush would be; it
// proves the durability checks bite against the real broker while the core
// has no Bug hook.
const brokerDiskBugLyingFsync = "lying-fsync"

// lyingDiskEnv is the broker's Env with fsyncs turned into stats.
type lyingDiskEnv struct{ node.Env }

func (e lyingDiskEnv) Disk(op node.DiskOp) node.OpID {
	if op.Kind.IsDurabilityBarrier() {
		op = node.StatOp(op.Path)
	}
	return e.Env.Disk(op)
}

// brokerCoreBugs are planted in the broker (broker.Config.Bug; partlog's
// are passed on to its storage).
var brokerCoreBugs = map[string]string{
	partlog.BugAckBeforeFlush: "produces on flush.messages=1 topics are acknowledged before their fsync: a power loss loses acknowledged records",
	partlog.BugAckBeforeWrite: "produces are acknowledged before their write completes: a kill (the page cache survives) loses acknowledged records on the lazy topic",
	partlog.BugReuseOffset:    "after recovery, offsets restart from the recovery-point checkpoint instead of the recovered log end: offsets hold two records",
	partlog.BugServeTorn:      "recovery and reads skip the batch CRC check: a torn tail is served (bad CRC, or records never produced)",
	broker.BugFetchStartZero:  "Fetch reports log start 0 when retention moved it: an offset out of range below the start looks like acknowledged records lost",
}

func brokerBugs() map[string]string {
	bugs := map[string]string{}
	for k, v := range brokerClientBugs { // order-independent: a map copy
		bugs[k] = v
	}
	bugs[brokerDiskBugLyingFsync] = "the broker's disk acknowledges fsyncs without making data durable: a power loss loses acknowledged records (ack-before-flush, as seen from outside)"
	for k, v := range brokerCoreBugs { // order-independent: a map copy
		bugs[k] = v
	}
	return bugs
}

func init() {
	Register(&Scenario{
		Name:    "broker",
		Doc:     "one Kafka broker on a simulated disk, 2-4 Kafka clients producing (acks 1/-1, retries) and fetching on 3 topics, every fault a single copy survives; acknowledged records survive, offsets never hold two records, batches whole and dense",
		Profile: brokerProfile,
		Bugs:    brokerBugs(),
		Build:   buildBroker,
	})
}

const brokerAddr = "b1:9092"

const unknownTopicOrPartition = 3

// brokerTopic is one topic the workload uses.
type brokerTopic struct {
	name       string
	partitions int32
	create     bool        // created with CreateTopics (else auto-created by a produce)
	configs    [][2]string // CreateTopics configs
	durable    bool
	retained   bool // retention by size: the log start moves
}

var brokerTopics = []brokerTopic{
	{name: "durable", partitions: 3, create: true, durable: true},
	{name: "auto", partitions: 2, durable: true},
	{name: "lazy", partitions: 1, create: true, durable: false,
		configs: [][2]string{{"flush.messages", fmt.Sprint(int64(math.MaxInt64))}}},
	// Segments of 1 KiB and 3 KiB kept: retention deletes segments (its
	// files through the trash, emptied step by step) while clients read.
	{name: "retained", partitions: 1, create: true, durable: true, retained: true,
		configs: [][2]string{{"segment.bytes", "1024"}, {"retention.bytes", "3072"}}},
}

// minFetchVersion: fetches of a retained topic speak v5 or later, which
// report the log start offset (the checker needs it to tell retention from
// loss); the others speak whatever their connection drew.
func minFetchVersion(topic string) int16 {
	if brokerRetained(topic) {
		return 5
	}
	return 0
}

func brokerRetained(topic string) bool {
	for _, t := range brokerTopics {
		if t.name == topic {
			return t.retained
		}
	}
	return false
}

func brokerDurable(topic string) bool {
	for _, t := range brokerTopics {
		if t.name == topic {
			return t.durable
		}
	}
	return true
}

type brokerChecks struct {
	w       *World
	server  *Node
	clients []*Node
	log     *checker.KafkaLog
	loads   []*brokerWorkload
	// ops are the produces and fetches in flight, by (client, op id).
	produces map[[2]int]*checker.KafkaProduce
	fetches  map[[2]int]int64 // call time
	acks     int
	served   int // fetched records
	// logStart is the largest log start offset a fetch of the retained
	// topic reported (a counter: retention ran).
	logStart int64
}

func buildBroker(w *World) Checks {
	r := stream(w.Seed, "broker", 0)
	bc := &brokerChecks{w: w, log: checker.NewKafkaLog(brokerDurable),
		produces: map[[2]int]*checker.KafkaProduce{}, fetches: map[[2]int]int64{}}
	bc.log.Retention = brokerRetained

	cfg := broker.DefaultConfig("")
	cfg.Listeners = []broker.Listener{{Name: "PLAINTEXT", Host: "b1", Port: 9092}}
	cfg.NumPartitions = 2
	cfg.AutoCreateTopics = true
	cfg.Log.FlushMessages = 1
	cfg.Log.RetentionMs = -1
	cfg.Log.RetentionBytes = -1
	// Small segments and indexes, so runs roll segments and look records
	// up through sparse indexes.
	cfg.Log.SegmentBytes = int64(2048 << r.IntN(6))
	cfg.Log.IndexIntervalBytes = 64 << r.IntN(6)
	cfg.Log.SegmentIndexBytes = 8 * (16 << r.IntN(5))
	// Short logs: record sets are sent from the read's buffer (and it is
	// recycled after the send) only if the copy threshold is low.
	cfg.FetchCopyBelow = []int{1, 100, 2048, 0}[r.IntN(4)]
	cfg.TrashStepBytes = drawTrashStep(w.Seed)
	factory := broker.New(cfg)
	switch {
	case w.Bug == brokerDiskBugLyingFsync:
		inner := factory
		factory = func(env node.Env) node.Machine { return inner(lyingDiskEnv{env}) }
	case brokerCoreBugs[w.Bug] != "":
		cfg.Bug = w.Bug
		factory = broker.New(cfg)
	}
	bc.server = w.AddNode(NodeSpec{Name: "b1", Listen: []string{brokerAddr}, Factory: factory,
		OnPowerLoss: func() { bc.log.PowerLoss(int64(w.Now())) }})

	nClients := 2 + r.IntN(3)
	for ci := range nClients {
		name := fmt.Sprintf("c%d", ci+1)
		wl := &brokerWorkload{bc: bc, client: ci, name: name,
			quota: 150 + r.IntN(150), stopAt: w.Params().Safety, hw: map[checker.KafkaTP]int64{}, scanAt: map[checker.KafkaTP]int64{}, scanEnd: map[checker.KafkaTP]bool{}, scanBusy: map[checker.KafkaTP]bool{},
			parts: map[string]int32{}, metaNeeded: map[string]bool{}}
		bc.loads = append(bc.loads, wl)
		ccfg := kafkaclient.Config{
			Name: name, Broker: brokerAddr,
			MaxInflight:    1 + r.IntN(4),
			Interval:       time.Duration(50+r.IntN(100)) * time.Millisecond,
			RequestTimeout: time.Duration(2+r.IntN(4)) * time.Second,
			Next:           wl.next,
			Invoke:         func(id int, op kafkaclient.Op) { bc.invoke(ci, id, op) },
			Return:         func(id int, op kafkaclient.Op, res kafkaclient.Result) { bc.returned(ci, id, op, res) },
			OnViolation:    func(msg string) { w.Fail(FailCorrectness, "kafka-client", "%s", msg) },
		}
		if _, ok := brokerClientBugs[w.Bug]; ok {
			ccfg.Bug = w.Bug
		}
		bc.clients = append(bc.clients, w.AddNode(NodeSpec{Name: name, Factory: kafkaclient.New(ccfg), Client: true}))
	}
	return bc
}

// ---- the workload ----

type brokerWorkload struct {
	bc     *brokerChecks
	client int
	name   string
	quota  int // new produce requests to make at most
	// stopAt ends new produces (retries go on): the workload spans the
	// safety phase and the liveness phase only finishes it.
	stopAt time.Duration
	made   int
	seq    int

	created  int  // topics of brokerTopics known to exist (in order)
	creating bool // a CreateTopics is in flight
	retries  []kafkaclient.Op
	unacked  int // produces (first tries and retries) not yet acknowledged
	hw       map[checker.KafkaTP]int64
	scanning bool
	scanAt   map[checker.KafkaTP]int64 // next offset to scan, per partition
	scanBusy map[checker.KafkaTP]bool  // a scan fetch is in flight
	// scanEnd marks partitions of non-durable topics whose scan reached
	// the high watermark: a power loss may have taken acknowledged records
	// there, so the acknowledged end is no target (the checker knows which
	// ones it may have taken).
	scanEnd map[checker.KafkaTP]bool

	parts      map[string]int32 // partitions per topic, as Metadata said
	metaNeeded map[string]bool  // topics whose partition count to ask
	metaBusy   bool
}

// partitions lists every partition to scan: those each topic was created
// with, or more if Metadata reported more (a topic whose CreateTopics a
// crash took back is auto-created with the broker's default count by the
// next Metadata that names it; seed 144348394 produced to such a partition).
func (wl *brokerWorkload) partitions() []checker.KafkaTP {
	var out []checker.KafkaTP
	for _, t := range brokerTopics {
		for p := range max(t.partitions, wl.parts[t.name]) {
			out = append(out, checker.KafkaTP{Topic: t.name, Partition: p})
		}
	}
	return out
}

func (wl *brokerWorkload) next(r *node.Rand) (kafkaclient.Op, bool) {
	// Topics first: each client asks (TOPIC_ALREADY_EXISTS is as good).
	for wl.created < len(brokerTopics) && !brokerTopics[wl.created].create {
		wl.created++
	}
	if wl.created < len(brokerTopics) {
		if wl.creating {
			return kafkaclient.Op{Kind: kafkaclient.Idle}, true
		}
		t := brokerTopics[wl.created]
		wl.creating = true
		return kafkaclient.Op{Kind: kafkaclient.CreateTopic, Topic: t.name, Partitions: t.partitions, Configs: t.configs}, true
	}
	if wl.scanning {
		return wl.nextScan()
	}
	// Then how many partitions each topic really has, as a real producer
	// learns it: a topic whose creation a crash interrupted may have
	// fewer than asked for.
	for _, t := range brokerTopics {
		if wl.metaNeeded[t.name] && !wl.metaBusy {
			wl.metaBusy = true
			return kafkaclient.Op{Kind: kafkaclient.Metadata, Topic: t.name}, true
		}
	}
	if len(wl.retries) > 0 && r.Chance(0.5) {
		op := wl.retries[0]
		wl.retries = slices.Delete(wl.retries, 0, 1)
		return op, true
	}
	known := wl.known()
	if wl.producing() && r.Chance(0.6) {
		tps := known
		if wl.parts["auto"] == 0 {
			// The first produce to it creates it.
			tps = append(tps, checker.KafkaTP{Topic: "auto", Partition: 0})
		}
		if len(tps) == 0 {
			return kafkaclient.Op{Kind: kafkaclient.Idle}, true
		}
		tp := tps[r.IntN(len(tps))]
		wl.made++
		wl.unacked++
		wl.seq++
		n := 1 + r.IntN(5)
		values := make([][]byte, n)
		for i := range values {
			values[i] = fmt.Appendf(nil, "%s-%d-%d", wl.name, wl.seq, i)
		}
		acks := int16(1)
		if r.Chance(0.5) {
			acks = -1
		}
		return kafkaclient.Op{Kind: kafkaclient.Produce, Topic: tp.Topic, Partition: tp.Partition, Values: values, Acks: acks}, true
	}
	if !wl.producing() && len(wl.retries) == 0 && wl.unacked == 0 {
		// Every produce acknowledged: scan once everyone is there.
		if wl.bc.allProduced() {
			wl.scanning = true
			return wl.nextScan()
		}
	}
	if len(known) == 0 {
		return kafkaclient.Op{Kind: kafkaclient.Idle}, true
	}
	tp := known[r.IntN(len(known))]
	hw := wl.hw[tp]
	op := kafkaclient.Op{Kind: kafkaclient.Fetch, Topic: tp.Topic, Partition: tp.Partition,
		MaxBytes: int32(256 << r.IntN(6)), MinVersion: minFetchVersion(tp.Topic)}
	switch x := r.Float64(); {
	case x < 0.2:
		op.Offset = 0
	case x < 0.7 && hw > 0:
		op.Offset = int64(r.IntN(int(hw)))
	default:
		op.Offset = hw // the tail: a long poll
		op.MaxWait = time.Duration(r.IntN(300)) * time.Millisecond
	}
	return op, true
}

// known lists the partitions Metadata reported, in topic order.
func (wl *brokerWorkload) known() []checker.KafkaTP {
	var out []checker.KafkaTP
	for _, t := range brokerTopics {
		for p := range wl.parts[t.name] {
			out = append(out, checker.KafkaTP{Topic: t.name, Partition: p})
		}
	}
	return out
}

// nextScan reads every partition from offset 0 through its acknowledged
// end, a fetch per partition at a time, without pacing.
func (wl *brokerWorkload) nextScan() (kafkaclient.Op, bool) {
	busy := false
	for _, tp := range wl.partitions() {
		if wl.bc.log.Acked(tp) <= wl.scanAt[tp] || wl.scanEnd[tp] {
			continue
		}
		if wl.scanBusy[tp] {
			busy = true
			continue
		}
		wl.scanBusy[tp] = true
		return kafkaclient.Op{Kind: kafkaclient.Fetch, Topic: tp.Topic, Partition: tp.Partition,
			Offset: wl.scanAt[tp], MaxBytes: 64 << 10, Unpaced: true, MinVersion: minFetchVersion(tp.Topic)}, true
	}
	if busy {
		return kafkaclient.Op{Kind: kafkaclient.Idle}, true
	}
	return kafkaclient.Op{}, false
}

// producing says whether the workload still makes new produces: until
// stopAt, and at least a few even if faults kept the broker away until then.
func (wl *brokerWorkload) producing() bool {
	const atLeast = 10
	return wl.made < wl.quota && (time.Duration(wl.bc.w.Now()) < wl.stopAt || wl.made < atLeast)
}

func (wl *brokerWorkload) returned(op kafkaclient.Op, res kafkaclient.Result) {
	tp := checker.KafkaTP{Topic: op.Topic, Partition: op.Partition}
	switch op.Kind {
	case kafkaclient.CreateTopic:
		wl.creating = false
		const topicAlreadyExists = 36
		if !res.Unknown && (res.Err == 0 || res.Err == topicAlreadyExists) {
			wl.metaNeeded[op.Topic] = true
			wl.created++
			if wl.created == len(brokerTopics) || !brokerTopics[wl.created].create {
				wl.metaNeeded["auto"] = true
			}
		}
	case kafkaclient.Metadata:
		wl.metaBusy = false
		if !res.Unknown {
			// An unknown topic ("auto" before its first produce) counts
			// as no partitions until a produce creates it.
			wl.metaNeeded[op.Topic] = false
			wl.parts[op.Topic] = res.Partitions
		}
	case kafkaclient.Produce:
		if !res.Unknown && res.Err == 0 {
			wl.unacked--
			wl.bc.acks++
			if wl.parts[op.Topic] == 0 {
				wl.metaNeeded[op.Topic] = true
			}
			return
		}
		if res.Err == unknownTopicOrPartition {
			wl.metaNeeded[op.Topic] = true
		}
		// Unknown, or refused: try the same records again (a retry may
		// duplicate them; the checker tolerates that after an unknown
		// outcome only).
		wl.retries = append(wl.retries, op)
	case kafkaclient.Fetch:
		if res.Err == unknownTopicOrPartition {
			wl.metaNeeded[op.Topic] = true
		}
		if op.Unpaced {
			wl.scanBusy[tp] = false
		}
		if res.Unknown || res.HighWatermark < 0 {
			return
		}
		wl.hw[tp] = res.HighWatermark
		if !op.Unpaced || op.Offset != wl.scanAt[tp] {
			return
		}
		const offsetOutOfRange = 1
		if res.Err == offsetOutOfRange && res.LogStartOffset > op.Offset && brokerRetained(tp.Topic) {
			wl.scanAt[tp] = res.LogStartOffset // retention took the rest
			return
		}
		for _, b := range res.Batches {
			for _, rec := range b.Records {
				wl.scanAt[tp] = max(wl.scanAt[tp], rec.Offset+1)
			}
		}
		if wl.scanAt[tp] == op.Offset && !brokerDurable(tp.Topic) {
			wl.scanEnd[tp] = true
		}
	}
}

func (bc *brokerChecks) allProduced() bool {
	for _, wl := range bc.loads {
		if wl.producing() || len(wl.retries) > 0 || wl.unacked > 0 {
			return false
		}
	}
	return true
}

// ---- recording ----

func (bc *brokerChecks) fail(err error) {
	bc.w.Fail(FailCorrectness, "kafka-log", "%v", err)
}

func (bc *brokerChecks) invoke(client, id int, op kafkaclient.Op) {
	now := int64(bc.w.Now())
	tp := checker.KafkaTP{Topic: op.Topic, Partition: op.Partition}
	switch op.Kind {
	case kafkaclient.Produce:
		p := &checker.KafkaProduce{Client: bc.loads[client].name, TP: tp, Call: now}
		for _, v := range op.Values {
			p.Values = append(p.Values, string(v))
		}
		bc.produces[[2]int{client, id}] = p
		if err := bc.log.ProduceSent(p); err != nil {
			bc.fail(err)
		}
	case kafkaclient.Fetch:
		bc.fetches[[2]int{client, id}] = now
	}
}

// refusedBeforeAppend are the produce errors Kafka gives only before it
// appends anything; every other error (a storage error, an unknown
// partition after a failed append) leaves the outcome unknown.
var refusedBeforeAppend = []int16{
	2,  // CORRUPT_MESSAGE
	10, // MESSAGE_TOO_LARGE
	21, // INVALID_REQUIRED_ACKS
	43, // UNSUPPORTED_FOR_MESSAGE_FORMAT
	87, // INVALID_RECORD
}

func (bc *brokerChecks) returned(client, id int, op kafkaclient.Op, res kafkaclient.Result) {
	now := int64(bc.w.Now())
	key := [2]int{client, id}
	bc.loads[client].returned(op, res)
	switch op.Kind {
	case kafkaclient.Produce:
		p := bc.produces[key]
		delete(bc.produces, key)
		if p == nil {
			return
		}
		p.Return = now
		switch {
		case res.Unknown:
			p.Outcome = checker.KafkaUnknown
		case res.Err == 0:
			p.Outcome, p.Offset = checker.KafkaAcked, res.BaseOffset
		case slices.Contains(refusedBeforeAppend, res.Err):
			p.Outcome = checker.KafkaFailed
		default:
			p.Outcome = checker.KafkaUnknown
		}
		if err := bc.log.ProduceDone(p); err != nil {
			bc.fail(err)
		}
	case kafkaclient.Fetch:
		call, ok := bc.fetches[key]
		delete(bc.fetches, key)
		if !ok || res.Unknown {
			return
		}
		f := &checker.KafkaFetch{Client: bc.loads[client].name, TP: checker.KafkaTP{Topic: op.Topic, Partition: op.Partition},
			Offset: op.Offset, Call: call, Return: now, Err: res.Err, HighWatermark: res.HighWatermark, LogStartOffset: res.LogStartOffset}
		for _, b := range res.Batches {
			kb := checker.KafkaBatch{BaseOffset: b.BaseOffset, LastOffsetDelta: b.LastOffsetDelta, NumRecords: b.NumRecords,
				CRCValid: b.CRCValid, Problem: b.Problem}
			for _, r := range b.Records {
				kb.Records = append(kb.Records, checker.KafkaRecord{Offset: r.Offset, Value: string(r.Value)})
			}
			bc.served += len(kb.Records)
			f.Batches = append(f.Batches, kb)
		}
		if err := bc.log.Fetched(f); err != nil {
			bc.fail(err)
		}
		if brokerRetained(op.Topic) && (res.Err == 0 || res.Err == 1) {
			bc.logStart = max(bc.logStart, res.LogStartOffset)
		}
	}
}

// ---- checks ----

func (bc *brokerChecks) Converged() (bool, string) {
	var waiting []string
	for i, c := range bc.clients {
		cl, _ := c.Machine().(*kafkaclient.Client)
		if cl == nil || !cl.Done() {
			wl := bc.loads[i]
			waiting = append(waiting, fmt.Sprintf("%s has not finished (%d produces made, %d unacknowledged, %d retries queued, scanning %v)",
				c.Name, wl.made, wl.unacked, len(wl.retries), wl.scanning))
		}
	}
	if len(waiting) > 0 {
		return false, strings.Join(waiting, "; ")
	}
	return true, ""
}

// drawTrashStep: in two runs of three deleted segments (of the retained
// topic) are emptied in steps of 128 or 512 bytes, so the trash truncates,
// syncs and pauses under the faults too; in the third, at the default 4 MiB,
// they go back to back.
func drawTrashStep(seed uint64) int64 {
	return []int64{128, 512, 0}[stream(seed, "trash-step", 0).IntN(3)]
}

// Counters: "log-start", the largest log start offset the retained topic
// reported (retention ran), and "trash-emptied", the files the broker's
// current incarnation emptied in more than one step.
func (bc *brokerChecks) Counters() map[string]uint64 {
	out := map[string]uint64{"log-start": uint64(max(bc.logStart, 0))}
	if b, ok := bc.server.Machine().(*broker.Broker); ok {
		out["trash-emptied"] = b.TrashStats().Emptied
	}
	return out
}

func (bc *brokerChecks) Final() error {
	if f := bc.w.failure; f != nil {
		return fmt.Errorf("%s", f.Message)
	}
	if bc.acks == 0 || bc.served == 0 {
		return fmt.Errorf("nothing was acknowledged (%d) or fetched (%d): the run checked nothing", bc.acks, bc.served)
	}
	return bc.log.Final()
}
