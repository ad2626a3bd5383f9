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

func init() { register(1, "Fetch", 4, 11, handleFetch) }

// fetch is one Fetch request in progress.
type fetch struct {
	b        *Broker
	r        *request
	req      *kmsg.FetchRequest
	parts    []fetchPart
	reads    int // reads in flight
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
	reading   bool
	reread    bool // the high watermark moved while reading
}

func handleFetch(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.FetchRequest)
	f := &fetch{b: b, r: r, req: req, minBytes: int(max(req.MinBytes, 0))}
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
	for i := range f.parts {
		if f.parts[i].p != nil {
			f.read(i)
		}
	}
	if f.reads == 0 {
		f.evaluate()
	}
}

func (f *fetch) read(i int) {
	fp := &f.parts[i]
	if fp.reading {
		fp.reread = true
		return
	}
	fp.reading = true
	f.reads++
	// minOneBatch everywhere: which partition is the first with data is
	// only known once all reads are back; respond trims the others.
	fp.p.log.Read(fp.offset, fp.maxBytes, true, func(res partlog.ReadResult) {
		fp.reading = false
		f.reads--
		if !f.finished {
			fp.res = res
			if fp.reread && fp.p != nil {
				fp.reread = false
				f.read(i)
			}
		}
		if f.reads == 0 {
			f.evaluate()
		}
	})
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
	resp := f.req.ResponseKind().(*kmsg.FetchResponse)
	resp.SessionID = 0
	budget := math.MaxInt32
	if f.req.Version >= 3 {
		budget = int(max(f.req.MaxBytes, 0))
	}
	first := true
	size := 0
	for i := range f.parts {
		fp := &f.parts[i]
		if len(resp.Topics) == 0 || resp.Topics[len(resp.Topics)-1].Topic != fp.topic {
			resp.Topics = append(resp.Topics, kmsg.FetchResponseTopic{Topic: fp.topic})
		}
		rt := &resp.Topics[len(resp.Topics)-1]
		sp := kmsg.NewFetchResponseTopicPartition()
		sp.Partition = fp.partition
		sp.PreferredReadReplica = -1
		// Empty, not null: librdkafka rejects a null record set.
		sp.RecordBatches = []byte{}
		switch {
		case fp.errCode != 0:
			sp.ErrorCode = fp.errCode
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
		case fp.p == nil || fp.p.log == nil || fp.p.t.deleted:
			sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
		case fp.res.Err != nil:
			sp.ErrorCode = storageErrorCode(fp.res.Err)
			sp.HighWatermark = fp.p.log.HighWatermark()
			sp.LastStableOffset = sp.HighWatermark
			sp.LogStartOffset = fp.p.log.LogStartOffset()
		default:
			sp.HighWatermark = fp.res.HighWatermark
			sp.LastStableOffset = fp.res.HighWatermark
			sp.LogStartOffset = fp.res.LogStartOffset
			recs := wholeBatches(fp.res.Records, min(fp.maxBytes, budget), first)
			if len(recs) > 0 {
				first = false
				budget -= len(recs)
				size += len(recs)
				sp.RecordBatches = recs
			}
		}
		rt.Partitions = append(rt.Partitions, sp)
	}
	b.replySized(f.r, resp, size+64*len(f.parts))
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
	if len(b.fetches) == 0 {
		if b.fetchTimerOn {
			b.env.CancelTimer(timerFetch)
			b.fetchTimerOn = false
		}
		return
	}
	at := b.fetches[0].deadline
	for _, f := range b.fetches[1:] {
		at = min(at, f.deadline)
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
