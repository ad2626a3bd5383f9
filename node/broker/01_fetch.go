package broker

import (
	"encoding/binary"
	"math"
	"slices"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node"
	"herd/node/broker/partlog"
)

// Fetch: v4-v11.
//
// v4 is the first version librdkafka accepts for RecordBatch v2 and the one
// kafka-python sends. v3+ MaxBytes bounds the response and each partition's
// PartitionMaxBytes bounds its share, except that the first batch of the
// first partition with data is returned whole however large (KIP-74), so a
// consumer can always make progress. v5 adds LogStartOffset, v7 fetch
// sessions, v9 CurrentLeaderEpoch, v11 rack-aware PreferredReadReplica
// (always -1). v12 is flexible and v13 uses topic ids; not served.
//
// Sessions (v7+): every answer is sessionless (SessionID 0), which all
// clients accept and which makes them send full fetch requests.
//
// Long-poll: a fetch that finds fewer than MinBytes waits until appends
// raise a partition's high watermark enough, or MaxWaitMillis passes; then
// it answers with what it has. Records are the log's raw batches.
//
// Memory and copies: partitions are read in request order while the
// response's MaxBytes leaves room (a fetch of 1,000 partitions does not
// read PartitionMaxBytes of each), and the reply is sent as a list of
// buffers in which large record sets are the read buffers themselves.

func init() { register(1, "Fetch", 4, 11, handleFetch) }

// fetch is one Fetch request in progress.
type fetch struct {
	b     *Broker
	r     *request
	req   *kmsg.FetchRequest
	parts []fetchPart
	reads int // reads in flight
	// The reads are paced by the response's byte budget (MaxBytes), so
	// that a fetch of many partitions with much data behind them does not
	// read (and hold) PartitionMaxBytes of each: a partition is read only
	// while budget-used-reserved leaves room, in request order, as the
	// response fills in that order anyway.
	budget   int
	used     int // bytes of records held in parts' results
	reserved int // bytes the reads in flight may return
	next     int // the first partition the initial pass has not read
	minBytes int
	deadline node.Time
	waiting  bool // registered with its partitions and b.fetches
	expired  bool
	finished bool
}

// fetchPart is one requested partition.
type fetchPart struct {
	topic     string
	partition int32
	p         *partition // nil: unknown (errCode says why)
	offset    int64
	maxBytes  int
	errCode   int16
	res       partlog.ReadResult
	have      bool // res holds a read's result
	readMax   int  // the maxBytes of the read in flight
	reading   bool
	reread    bool // the high watermark moved while reading
}

func handleFetch(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.FetchRequest)
	f := &fetch{b: b, r: r, req: req, minBytes: int(max(req.MinBytes, 0)), budget: b.fetchBudget(req)}
	wait := time.Duration(max(req.MaxWaitMillis, 0)) * time.Millisecond
	f.deadline = b.env.Now().Add(wait)
	if wait <= 0 {
		f.expired = true
	}
	for _, rt := range req.Topics {
		for _, rp := range rt.Partitions {
			fp := fetchPart{topic: rt.Topic, partition: rp.Partition, offset: rp.FetchOffset, maxBytes: int(max(rp.PartitionMaxBytes, 0))}
			fp.res.HighWatermark, fp.res.LogStartOffset = -1, -1
			switch p := b.partition(rt.Topic, rp.Partition); {
			case p == nil:
				fp.errCode = kerr.UnknownTopicOrPartition.Code
			case req.Version >= 9 && rp.CurrentLeaderEpoch > 0:
				fp.errCode = kerr.UnknownLeaderEpoch.Code
			default:
				fp.p = p
			}
			f.parts = append(f.parts, fp)
		}
	}
	f.pump()
	if f.reads == 0 {
		f.evaluate()
	}
}

// pump starts the reads of the initial pass that the budget allows.
func (f *fetch) pump() {
	for f.next < len(f.parts) {
		fp := &f.parts[f.next]
		if fp.p == nil || fp.have {
			f.next++
			continue
		}
		switch f.read(f.next) {
		case readNoBudget:
			return
		default:
			f.next++
		}
	}
}

type readStart uint8

const (
	readStarted  readStart = iota
	readNoBudget           // the budget is spoken for; try again after a read
	readSkipped            // PartitionMaxBytes 0 and not the first batch
)

func (f *fetch) read(i int) readStart {
	fp := &f.parts[i]
	if fp.reading {
		fp.reread = true
		return readStarted
	}
	// This read replaces the partition's earlier result, if any.
	used := f.used - len(fp.res.Records)
	n := min(fp.maxBytes, max(f.budget-used-f.reserved, 0))
	if n <= 0 && (used > 0 || f.reserved > 0) {
		// Only the first batch of the response may exceed the limits
		// (KIP-74); the others would be trimmed away.
		if fp.maxBytes <= 0 {
			return readSkipped
		}
		return readNoBudget
	}
	fp.reading = true
	fp.readMax = n
	f.reserved += n
	f.reads++
	// minOneBatch everywhere: which partition is the first with data is
	// only known once all reads are back; respond trims the others.
	fp.p.log.Read(fp.offset, n, true, func(res partlog.ReadResult) {
		fp.reading = false
		f.reads--
		f.reserved -= fp.readMax
		if f.finished {
			f.recycle(res.Buf)
		} else {
			f.used += len(res.Records) - len(fp.res.Records)
			f.recycle(fp.res.Buf)
			fp.res, fp.have = res, true
			if fp.reread && fp.p != nil {
				fp.reread = false
				f.read(i)
			}
			f.pump()
		}
		if f.reads == 0 {
			f.evaluate()
		}
	})
	return readStarted
}

// evaluate answers the fetch if it has enough (or has waited long enough),
// and otherwise parks it.
func (f *fetch) evaluate() {
	if f.finished {
		return
	}
	total := 0
	failed := false
	for i := range f.parts {
		fp := &f.parts[i]
		total += len(fp.res.Records)
		if fp.errCode != 0 || fp.res.Err != nil {
			failed = true
		}
	}
	if f.expired || failed || total >= f.minBytes || f.b.state != stReady {
		f.respond()
		return
	}
	// A partition whose high watermark moved after its read began (before
	// the fetch was parked, so no notice reached it) is read again, or
	// the fetch would sleep until its deadline on data that is there.
	for i := range f.parts {
		fp := &f.parts[i]
		if fp.p != nil && fp.have && fp.p.log != nil && !fp.p.t.deleted && fp.p.log.HighWatermark() > fp.res.HighWatermark {
			f.read(i)
		}
	}
	if !f.waiting {
		f.waiting = true
		for i := range f.parts {
			if p := f.parts[i].p; p != nil {
				p.fetches = append(p.fetches, f)
			}
		}
		f.b.fetches = append(f.b.fetches, f)
		f.b.armFetchTimer()
	}
}

// partitionGone is called when one of the fetch's partitions is deleted.
func (f *fetch) partitionGone() {
	if f.finished {
		return
	}
	f.expired = true
	if f.reads == 0 {
		f.respond()
	}
}

func (f *fetch) respond() {
	f.finished = true
	b := f.b
	if f.waiting {
		f.waiting = false
		for i := range f.parts {
			if p := f.parts[i].p; p != nil {
				p.fetches = slices.DeleteFunc(p.fetches, func(g *fetch) bool { return g == f })
			}
		}
		b.fetches = slices.DeleteFunc(b.fetches, func(g *fetch) bool { return g == f })
	}
	budget := b.fetchBudget(f.req)
	first := true
	parts := make([]fetchOut, len(f.parts))
	for i := range f.parts {
		fp := &f.parts[i]
		o := &parts[i]
		o.topic, o.partition = fp.topic, fp.partition
		switch {
		case fp.errCode != 0:
			o.errCode = fp.errCode
			o.hw, o.logStart = -1, -1
		case fp.p == nil || fp.p.log == nil || fp.p.t.deleted:
			o.errCode = kerr.UnknownTopicOrPartition.Code
			o.hw, o.logStart = -1, -1
		case fp.res.Err != nil:
			o.errCode = storageErrorCode(fp.res.Err)
			o.hw = fp.p.log.HighWatermark()
			o.logStart = fp.p.log.LogStartOffset()
			if b.cfg.Bug == BugFetchStartZero {
				o.logStart = 0
			}
		case !fp.have:
			// Not read: the budget was spent on earlier partitions.
			o.hw = fp.p.log.HighWatermark()
			o.logStart = fp.p.log.LogStartOffset()
		default:
			o.hw = fp.res.HighWatermark
			o.logStart = fp.res.LogStartOffset
			recs := wholeBatches(fp.res.Records, min(fp.maxBytes, budget), first)
			if len(recs) > 0 {
				first = false
				budget -= len(recs)
				o.records = recs
			}
		}
	}
	copyBelow := b.fetchCopyBelow()
	outv := encodeFetchResponse(f.r.corr, f.req.Version, parts, copyBelow)
	// The read buffers: those the reply sends from go back once it is
	// sent; the others (copied into the reply, or trimmed away) now.
	for i := range f.parts {
		buf := f.parts[i].res.Buf
		f.parts[i].res = partlog.ReadResult{}
		switch {
		case buf == nil:
		case len(parts[i].records) >= copyBelow:
			f.r.sentFrom = append(f.r.sentFrom, buf)
		default:
			f.recycle(buf)
		}
	}
	b.finishVec(f.r, outv)
}

// fetchBudget is the most record bytes a Fetch response carries: the
// request's MaxBytes (v3+), capped by fetch.max.bytes as in Kafka. A larger
// response would outgrow the shell's send queue bound and reset the
// connection, which the client would only fetch again.
func (b *Broker) fetchBudget(req *kmsg.FetchRequest) int {
	budget := math.MaxInt32
	if req.Version >= 3 {
		budget = int(max(req.MaxBytes, 0))
	}
	if c := b.cfg.FetchMaxBytes; c > 0 {
		budget = min(budget, c)
	}
	return budget
}

func (b *Broker) fetchCopyBelow() int {
	if b.cfg.FetchCopyBelow > 0 {
		return b.cfg.FetchCopyBelow
	}
	return copyRecordsBelow
}

// recycle hands a read buffer no longer used back to the shell.
func (f *fetch) recycle(buf []byte) {
	if buf != nil {
		f.b.env.Recycle(buf)
	}
}

// fetchOut is one partition of a Fetch response.
type fetchOut struct {
	topic     string
	partition int32
	errCode   int16
	hw        int64 // also the last stable offset: no transactions
	logStart  int64
	records   []byte
}

// copyRecordsBelow: record sets smaller than this are copied into the
// response's own buffer; larger ones are sent as they are, so a fetch of
// many megabytes is not copied again after the disk read.
const copyRecordsBelow = 16 << 10

// encodeFetchResponse frames a Fetch response (v4-v11, header v0) as a
// list of buffers to send in order: the response's fields, with large
// record sets as buffers of their own, not copied. Sessionless (SessionID
// 0), no throttle, no aborted transactions (null), PreferredReadReplica -1,
// an empty (not null) record set where there is none: librdkafka rejects
// a null one. TestEncodeFetchResponse checks it against kmsg.
func encodeFetchResponse(corr int32, version int16, parts []fetchOut, copyBelow int) [][]byte {
	// Size the fields buffer exactly, so the pieces cut from it stay put.
	n := 4 + 4 + 4 + 4 // length, correlation id, throttle, topics count
	if version >= 7 {
		n += 2 + 4
	}
	pieces, total := 1, 0
	for i := range parts {
		o := &parts[i]
		if i == 0 || parts[i-1].topic != o.topic {
			n += 2 + len(o.topic) + 4
		}
		n += 4 + 2 + 8 + 8 + 4 + 4
		if version >= 5 {
			n += 8
		}
		if version >= 11 {
			n += 4
		}
		if len(o.records) < copyBelow {
			n += len(o.records)
		} else {
			pieces += 2
			total += len(o.records)
		}
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, 0, pieces)
	buf = binary.BigEndian.AppendUint32(buf, uint32(n+total-4))
	buf = binary.BigEndian.AppendUint32(buf, uint32(corr))
	buf = binary.BigEndian.AppendUint32(buf, 0) // throttle
	if version >= 7 {
		buf = binary.BigEndian.AppendUint16(buf, 0) // error code
		buf = binary.BigEndian.AppendUint32(buf, 0) // session id
	}
	topics := 0
	for i := range parts {
		if i == 0 || parts[i-1].topic != parts[i].topic {
			topics++
		}
	}
	buf = binary.BigEndian.AppendUint32(buf, uint32(topics))
	from := 0 // start of the fields not yet cut into out
	for i := range parts {
		o := &parts[i]
		if i == 0 || parts[i-1].topic != o.topic {
			buf = binary.BigEndian.AppendUint16(buf, uint16(len(o.topic)))
			buf = append(buf, o.topic...)
			k := i + 1
			for k < len(parts) && parts[k].topic == o.topic {
				k++
			}
			buf = binary.BigEndian.AppendUint32(buf, uint32(k-i))
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(o.partition))
		buf = binary.BigEndian.AppendUint16(buf, uint16(o.errCode))
		buf = binary.BigEndian.AppendUint64(buf, uint64(o.hw))
		buf = binary.BigEndian.AppendUint64(buf, uint64(o.hw)) // last stable offset
		if version >= 5 {
			buf = binary.BigEndian.AppendUint64(buf, uint64(o.logStart))
		}
		buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // aborted transactions: null
		if version >= 11 {
			buf = binary.BigEndian.AppendUint32(buf, math.MaxUint32) // preferred read replica -1
		}
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(o.records)))
		if len(o.records) < copyBelow {
			buf = append(buf, o.records...)
			continue
		}
		out = append(out, buf[from:len(buf):len(buf)], o.records)
		from = len(buf)
	}
	if len(buf) != n {
		panic("broker: Fetch response size miscounted")
	}
	if from < len(buf) {
		out = append(out, buf[from:])
	}
	return out
}

// wholeBatches returns the longest prefix of recs made of whole record
// batches that fits in limit bytes; with atLeastOne, the first batch even
// if it alone exceeds limit (KIP-74).
func wholeBatches(recs []byte, limit int, atLeastOne bool) []byte {
	end := 0
	for end+12 <= len(recs) {
		n := 12 + int(int32(binary.BigEndian.Uint32(recs[end+8:])))
		if n < 12 || end+n > len(recs) {
			break
		}
		if end+n > limit && !(atLeastOne && end == 0) {
			break
		}
		end += n
	}
	return recs[:end:end]
}

// highWatermark is partlog's notice that l has new readable data: waiting
// fetches on it read again.
func (b *Broker) highWatermark(l partitionLog) {
	tp := l.TopicPartition()
	p := b.partition(tp.Topic, tp.Partition)
	if p == nil || p.log != l || len(p.fetches) == 0 {
		return
	}
	for _, f := range slices.Clone(p.fetches) {
		if f.finished {
			continue
		}
		for i := range f.parts {
			if f.parts[i].p == p {
				f.read(i)
			}
		}
	}
}

// armFetchTimer points the fetch timer at the earliest waiting deadline.
func (b *Broker) armFetchTimer() {
	// Expired fetches still waiting for a read answer when it arrives;
	// counting their past deadlines would fire the timer again at once,
	// forever (found by the broker scenario).
	var at node.Time
	armed := false
	for _, f := range b.fetches {
		if f.expired || f.finished {
			continue
		}
		if !armed || f.deadline < at {
			at, armed = f.deadline, true
		}
	}
	if !armed {
		if b.fetchTimerOn {
			b.env.CancelTimer(timerFetch)
			b.fetchTimerOn = false
		}
		return
	}
	if b.fetchTimerOn && b.fetchTimerAt == at {
		return
	}
	b.fetchTimerOn = true
	b.fetchTimerAt = at
	b.env.SetTimer(timerFetch, at.Sub(b.env.Now()))
}

// expireFetches answers the waiting fetches whose time is up.
func (b *Broker) expireFetches() {
	now := b.env.Now()
	for _, f := range slices.Clone(b.fetches) {
		if f.finished || f.deadline > now {
			continue
		}
		f.expired = true
		if f.reads == 0 {
			f.respond()
		}
	}
	b.armFetchTimer()
}
