package checker

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"
)

// This file checks a Kafka partition log against its clients' history: every
// produce (its values, and the offset acknowledged or an unknown outcome)
// and every fetch (the batches served, decoded by the client). KafkaLog is
// fed in real time order, as a simulation runs, and fails at the first
// violation, so a failing run stops where the damage shows; CheckKafka feeds
// it a recorded history.
//
// Checked, for every topic:
//   - every batch served is whole (not cut short, decodable), its CRC-32C is
//     valid and its record count matches its offsets;
//   - offsets within a fetch are dense and increasing: each batch starts
//     where the previous one ended, the first holds the offset asked for,
//     and nothing is served at or above the high watermark reported;
//   - nothing is fetched that was never produced to that partition, and
//     nothing whose every produce the broker definitely refused;
//   - a record is never at two offsets unless one of its produces had an
//     unknown outcome (a retry may then append it again).
//
// For durable topics (flush.messages=1: acknowledged means fsynced, and a
// reader sees only fsynced data) also, across every crash:
//   - no offset ever holds two different records (acknowledged or fetched,
//     before or after any crash);
//   - acknowledged records survive: a fetch invoked after the
//     acknowledgement never finds the log ending at or below the
//     acknowledged offset, nor the partition gone, and (Final) every
//     acknowledged record was read back at its offset after it was
//     acknowledged;
//   - the high watermark never goes back: a fetch invoked after another
//     returned reports at least the earlier fetch's high watermark.
//
// Retention (topics KafkaLog.Retention names) may advance a partition's log
// start offset, which every fetch reports: records below it are gone by
// design. There the checks above hold at and above the log start, and also:
//   - the log start offset never goes back (a fetch invoked after another
//     returned reports at least the earlier one's) and is never above the
//     high watermark reported with it (retention deletes only what every
//     reader could have read);
//   - OFFSET_OUT_OF_RANGE below the reported log start is no loss, and an
//     acknowledged record below the largest log start seen need not be read
//     back.
//
// On every other topic the log start must stay 0: records never vanish from
// the front.
//
// For the other topics (acknowledged once in the page cache) the same three
// hold between power losses (PowerLoss): a killed or halted process leaves
// its completed writes in the page cache, so only a power loss may take
// back what was acknowledged or served, and only what was acknowledged or
// served before it. What was first seen (its produce or fetch sent) after
// the latest power loss must still be there: no other record at its
// offset, the high watermark not below it, and (Final) read back.
//
// Values must be unique per produce request; retries repeat them.

// KafkaTP names a topic partition.
type KafkaTP struct {
	Topic     string
	Partition int32
}

func (tp KafkaTP) String() string { return fmt.Sprintf("%s-%d", tp.Topic, tp.Partition) }

// KafkaOutcome is what a producer learned of one produce request.
type KafkaOutcome uint8

const (
	// KafkaPending: no answer yet.
	KafkaPending KafkaOutcome = iota
	// KafkaAcked: appended at Offset.
	KafkaAcked
	// KafkaUnknown: no answer (connection lost, timeout) or an error the
	// broker may have given after appending (a storage error): the records
	// may or may not be in the log.
	KafkaUnknown
	// KafkaFailed: refused before anything was appended.
	KafkaFailed
)

func (o KafkaOutcome) String() string {
	return [...]string{"pending", "acked", "unknown", "failed"}[o]
}

// KafkaProduce is one produce request (one attempt: a retry is another).
type KafkaProduce struct {
	Client string
	TP     KafkaTP
	Values []string
	// Call and Return are when it was sent and answered (simulated time,
	// nanoseconds); real time order, not a node's clock.
	Call, Return int64
	Outcome      KafkaOutcome
	Offset       int64 // base offset, when acknowledged
}

// KafkaFetch is one fetch and what it returned.
type KafkaFetch struct {
	Client       string
	TP           KafkaTP
	Offset       int64
	Call, Return int64
	// Err is the partition's Kafka error code (0 none; 1
	// OFFSET_OUT_OF_RANGE; 3 UNKNOWN_TOPIC_OR_PARTITION; ...).
	Err           int16
	HighWatermark int64
	// LogStartOffset is the partition's log start as the answer reported
	// it (-1: not reported).
	LogStartOffset int64
	Batches        []KafkaBatch
}

// KafkaBatch is one served record batch, as the client decoded it.
type KafkaBatch struct {
	BaseOffset      int64
	LastOffsetDelta int32
	NumRecords      int32
	CRCValid        bool
	Problem         string // why it did not decode whole ("" if it did)
	Records         []KafkaRecord
}

// KafkaRecord is one fetched record.
type KafkaRecord struct {
	Offset int64
	Value  string
}

// Kafka error codes the checks interpret.
const (
	kafkaOffsetOutOfRange        int16 = 1
	kafkaUnknownTopicOrPartition int16 = 3
)

// KafkaLog is the incremental checker.
type KafkaLog struct {
	// Retention (nil: none) names the topics whose log start offset may
	// advance (retention by time or size).
	Retention func(topic string) bool

	durable func(topic string) bool
	parts   map[KafkaTP]*kafkaPart
	values  map[string]*kafkaValue
	// lastLoss is when the broker last lost power (0: never).
	lastLoss int64
}

type kafkaPart struct {
	tp      KafkaTP
	durable bool
	// at holds what each offset was seen to hold, and where first.
	at map[int64]kafkaSlot
	// acks and hws are in return order, with running maxima, so "the
	// largest acknowledged end (high watermark) returned before time t" is
	// a binary search.
	acks []kafkaMark
	hws  []kafkaMark
	// starts are the log start offsets fetches reported, in return order
	// with running maxima (as hws).
	starts []kafkaMark
	// sinceLoss is acks restricted to the produces sent since the
	// broker's latest power loss (a power loss empties it, and hws), kept
	// on topics that do not fsync every batch only; survivalMarks says
	// which list the survival checks use.
	sinceLoss []kafkaMark
}

type kafkaSlot struct {
	value string
	from  string
	// ackedAt is when the value was acknowledged at this offset (0: not
	// acknowledged here); readBack says a fetch invoked later served it.
	ackedAt  int64
	readBack bool
	// seen is when the first produce or fetch that showed value here was
	// sent, and ackCall when the acknowledged one was: on topics that may
	// lose records in a power loss, a loss after that excuses them.
	seen, ackCall int64
}

type kafkaMark struct {
	at    int64 // return time
	value int64 // running maximum of the acknowledged end, or the high watermark
	from  string
}

type kafkaValue struct {
	tp                               KafkaTP
	pending, acked, unknown, refused int
	offsets                          []int64 // distinct offsets it was seen at
}

// NewKafkaLog returns a checker; durable says which topics fsync every
// batch before acknowledging it.
func NewKafkaLog(durable func(topic string) bool) *KafkaLog {
	return &KafkaLog{durable: durable, parts: map[KafkaTP]*kafkaPart{}, values: map[string]*kafkaValue{}}
}

func (k *KafkaLog) part(tp KafkaTP) *kafkaPart {
	p := k.parts[tp]
	if p == nil {
		p = &kafkaPart{tp: tp, durable: k.durable(tp.Topic), at: map[int64]kafkaSlot{}}
		k.parts[tp] = p
	}
	return p
}

func at(ns int64) string { return time.Duration(ns).String() }

// PowerLoss records that the broker lost power at t: on topics that do not
// fsync every batch, what was acknowledged or served before may be gone.
func (k *KafkaLog) PowerLoss(t int64) {
	k.lastLoss = max(k.lastLoss, t)
	for _, pt := range k.parts { // order-independent: only clears
		if !pt.durable {
			pt.sinceLoss, pt.hws, pt.starts = nil, nil, nil
		}
	}
}

// protected says whether what was seen at the time t (a produce or fetch
// sent then) must still be in pt's log: always on durable topics, and on the
// others if the broker has not lost power since.
func (k *KafkaLog) protected(pt *kafkaPart, t int64) bool {
	return pt.durable || t > k.lastLoss
}

// ProduceSent records a produce request as it is sent.
func (k *KafkaLog) ProduceSent(p *KafkaProduce) error {
	for _, v := range p.Values {
		kv := k.values[v]
		if kv == nil {
			kv = &kafkaValue{tp: p.TP}
			k.values[v] = kv
		}
		if kv.tp != p.TP {
			return fmt.Errorf("history: value %q produced to %s and %s (values must be unique per partition)", v, kv.tp, p.TP)
		}
		kv.pending++
	}
	return nil
}

// ProduceDone records a produce request's outcome.
func (k *KafkaLog) ProduceDone(p *KafkaProduce) error {
	pt := k.part(p.TP)
	for _, v := range p.Values {
		kv := k.values[v]
		if kv == nil || kv.pending == 0 {
			return fmt.Errorf("history: outcome of a produce of %q that was never sent", v)
		}
		kv.pending--
		switch p.Outcome {
		case KafkaAcked:
			kv.acked++
		case KafkaUnknown:
			kv.unknown++
		case KafkaFailed:
			kv.refused++
		default:
			return fmt.Errorf("history: produce of %q returned with outcome %v", v, p.Outcome)
		}
	}
	if p.Outcome != KafkaAcked {
		return nil
	}
	if p.Offset < 0 {
		return fmt.Errorf("%s: %s's produce of %q acknowledged at offset %d", p.TP, p.Client, p.Values, p.Offset)
	}
	from := fmt.Sprintf("acknowledged to %s at %s", p.Client, at(p.Return))
	for i, v := range p.Values {
		if err := k.place(pt, p.Offset+int64(i), v, from, p.Call, p.Return); err != nil {
			return err
		}
	}
	pt.acks = appendMark(pt.acks, p, from)
	if !pt.durable && k.protected(pt, p.Call) {
		pt.sinceLoss = appendMark(pt.sinceLoss, p, from)
	}
	return nil
}

// survivalMarks are the acknowledgements a fetch must not find lost: all of
// them on a durable topic, on the others those since the latest power loss.
func (pt *kafkaPart) survivalMarks() []kafkaMark {
	if pt.durable {
		return pt.acks
	}
	return pt.sinceLoss
}

// appendMark adds an acknowledgement to marks, keeping the running maximum.
func appendMark(marks []kafkaMark, p *KafkaProduce, from string) []kafkaMark {
	end := p.Offset + int64(len(p.Values))
	if n := len(marks); n > 0 {
		end = max(end, marks[n-1].value)
	}
	return append(marks, kafkaMark{at: p.Return, value: end, from: from})
}

// place records that off holds v: the same-offset and same-value checks.
// call is when the produce or fetch that shows it was sent; ackedAt is the
// acknowledgement's time, or 0 for a fetch. On a topic that may lose
// acknowledged records in a power loss (and so reuse their offsets), an
// offset may change only if what it held was first seen before the latest
// power loss; the same-value check always applies: a lost record is never
// produced again unless its produce had an unknown outcome.
func (k *KafkaLog) place(pt *kafkaPart, off int64, v, from string, call, ackedAt int64) error {
	slot, ok := pt.at[off]
	if ok && slot.value != v && k.protected(pt, slot.seen) {
		if pt.durable {
			return fmt.Errorf("%s: offset %d holds two records: %q (%s) and %q (%s)", pt.tp, off, slot.value, slot.from, v, from)
		}
		return fmt.Errorf("%s: offset %d holds two records: %q (%s) and %q (%s), and the broker did not lose power in between (a killed process leaves its writes in the page cache)",
			pt.tp, off, slot.value, slot.from, v, from)
	}
	if !ok || slot.value != v {
		kv := k.values[v]
		if !slices.Contains(kv.offsets, off) {
			kv.offsets = append(kv.offsets, off)
		}
		if len(kv.offsets) > 1 && kv.unknown == 0 {
			return fmt.Errorf("%s: record %q is at offsets %v, but none of its produces had an unknown outcome (%d acknowledged, %d refused): duplicated by the broker (latest: %s)",
				pt.tp, v, kv.offsets, kv.acked, kv.refused, from)
		}
		slot = kafkaSlot{value: v, from: from, seen: call}
	}
	if ackedAt != 0 && slot.ackedAt == 0 {
		slot.ackedAt, slot.ackCall = ackedAt, call
	}
	pt.at[off] = slot
	return nil
}

// before returns the last mark returned strictly before t.
func before(marks []kafkaMark, t int64) (kafkaMark, bool) {
	i, _ := slices.BinarySearchFunc(marks, t, func(m kafkaMark, t int64) int { return cmp.Compare(m.at, t) })
	if i == 0 {
		return kafkaMark{}, false
	}
	return marks[i-1], true
}

// Fetched checks one fetch's answer.
func (k *KafkaLog) Fetched(f *KafkaFetch) error {
	pt := k.part(f.TP)
	where := fmt.Sprintf("%s's fetch of %s from %d (sent %s, answered %s)", f.Client, f.TP, f.Offset, at(f.Call), at(f.Return))
	if f.Err == 0 || f.Err == kafkaOffsetOutOfRange {
		if err := k.structure(f, where); err != nil {
			return err
		}
	}
	retained := k.Retention != nil && k.Retention(f.TP.Topic)
	if err := k.logStart(pt, f, where, retained); err != nil {
		return err
	}
	// Below the log start retention took the records: no loss.
	belowStart := retained && f.Err == kafkaOffsetOutOfRange && f.Offset < f.LogStartOffset
	if ack, ok := before(pt.survivalMarks(), f.Call); ok && !belowStart {
		switch {
		case f.Err == 0 && f.HighWatermark < ack.value:
			return fmt.Errorf("%s: high watermark %d, but offsets up to %d were acknowledged before it was sent (the last %s): acknowledged records lost",
				where, f.HighWatermark, ack.value-1, ack.from)
		case f.Err == kafkaOffsetOutOfRange && f.Offset <= ack.value:
			return fmt.Errorf("%s: OFFSET_OUT_OF_RANGE (high watermark %d), but offsets up to %d were acknowledged before it was sent (the last %s): acknowledged records lost",
				where, f.HighWatermark, ack.value-1, ack.from)
		case f.Err == kafkaUnknownTopicOrPartition:
			return fmt.Errorf("%s: UNKNOWN_TOPIC_OR_PARTITION, but offsets up to %d were acknowledged before it was sent (the last %s): the partition was lost",
				where, ack.value-1, ack.from)
		}
	}
	// A fetch sent before a power loss may report a high watermark the
	// loss took back: it sets no mark.
	if (f.Err == 0 || f.Err == kafkaOffsetOutOfRange) && f.HighWatermark >= 0 && k.protected(pt, f.Call) {
		if prev, ok := before(pt.hws, f.Call); ok && f.HighWatermark < prev.value {
			return fmt.Errorf("%s: high watermark %d, below the %d %s: the high watermark went back", where, f.HighWatermark, prev.value, prev.from)
		}
		hw := f.HighWatermark
		if n := len(pt.hws); n > 0 && pt.hws[n-1].value > hw {
			pt.hws = append(pt.hws, pt.hws[n-1])
			pt.hws[n].at = f.Return
		} else {
			pt.hws = append(pt.hws, kafkaMark{at: f.Return, value: hw, from: "seen by " + where})
		}
	}
	return k.records(pt, f, where)
}

// logStart checks the log start offset a fetch reported and records it.
func (k *KafkaLog) logStart(pt *kafkaPart, f *KafkaFetch, where string, retained bool) error {
	if f.Err != 0 && f.Err != kafkaOffsetOutOfRange || f.LogStartOffset < 0 {
		return nil
	}
	start := f.LogStartOffset
	switch {
	case !retained && start > 0:
		return fmt.Errorf("%s: log start offset %d on a topic without retention: records vanished from the front", where, start)
	case f.HighWatermark >= 0 && start > f.HighWatermark:
		return fmt.Errorf("%s: log start offset %d above the high watermark %d: retention deleted records not every reader could read", where, start, f.HighWatermark)
	case !k.protected(pt, f.Call):
		return nil // a power loss since may have taken it back (non-durable topics)
	}
	if prev, ok := before(pt.starts, f.Call); ok && start < prev.value {
		return fmt.Errorf("%s: log start offset %d, below the %d %s: the log start went back", where, start, prev.value, prev.from)
	}
	if n := len(pt.starts); n > 0 && pt.starts[n-1].value > start {
		pt.starts = append(pt.starts, pt.starts[n-1])
		pt.starts[n].at = f.Return
	} else {
		pt.starts = append(pt.starts, kafkaMark{at: f.Return, value: start, from: "seen by " + where})
	}
	return nil
}

// structure checks a fetch's batches on their own.
func (k *KafkaLog) structure(f *KafkaFetch, where string) error {
	next := int64(-1)
	for i, b := range f.Batches {
		if b.Problem != "" {
			return fmt.Errorf("%s: batch %d (at %d) is not whole: %s", where, i, b.BaseOffset, b.Problem)
		}
		if !b.CRCValid {
			return fmt.Errorf("%s: batch %d (at %d) fails its CRC: a torn or corrupt batch was served", where, i, b.BaseOffset)
		}
		if int64(b.NumRecords) != int64(b.LastOffsetDelta)+1 || len(b.Records) != int(b.NumRecords) {
			return fmt.Errorf("%s: batch %d (at %d) counts %d records, last offset delta %d, and holds %d",
				where, i, b.BaseOffset, b.NumRecords, b.LastOffsetDelta, len(b.Records))
		}
		for j, r := range b.Records {
			if r.Offset != b.BaseOffset+int64(j) {
				return fmt.Errorf("%s: batch at %d holds record %d at offset %d: offsets not dense", where, b.BaseOffset, j, r.Offset)
			}
		}
		last := b.BaseOffset + int64(b.LastOffsetDelta)
		switch {
		case i == 0 && (b.BaseOffset > f.Offset || last < f.Offset):
			return fmt.Errorf("%s: first batch holds offsets %d-%d, not the offset asked for", where, b.BaseOffset, last)
		case i > 0 && b.BaseOffset != next:
			return fmt.Errorf("%s: batch %d starts at %d, the one before ended at %d: offsets not dense and increasing", where, i, b.BaseOffset, next-1)
		case last >= f.HighWatermark:
			return fmt.Errorf("%s: batch holds offsets up to %d, at or past the high watermark %d", where, last, f.HighWatermark)
		}
		next = last + 1
	}
	return nil
}

// records checks the fetched records against what was produced and seen.
func (k *KafkaLog) records(pt *kafkaPart, f *KafkaFetch, where string) error {
	for _, b := range f.Batches {
		for _, r := range b.Records {
			kv := k.values[r.Value]
			switch {
			case kv == nil:
				return fmt.Errorf("%s: offset %d holds %q, which was never produced", where, r.Offset, r.Value)
			case kv.tp != f.TP:
				return fmt.Errorf("%s: offset %d holds %q, which was produced to %s", where, r.Offset, r.Value, kv.tp)
			case kv.acked+kv.unknown+kv.pending == 0:
				return fmt.Errorf("%s: offset %d holds %q, whose every produce the broker refused", where, r.Offset, r.Value)
			}
			if err := k.place(pt, r.Offset, r.Value, "served to "+where, f.Call, 0); err != nil {
				return err
			}
			if slot, ok := pt.at[r.Offset]; ok && slot.ackedAt != 0 && slot.ackedAt < f.Call && !slot.readBack {
				slot.readBack = true
				pt.at[r.Offset] = slot
			}
		}
	}
	return nil
}

// Final checks that every acknowledged record of a durable topic, and of the
// others every one whose produce was sent after the latest power loss, was
// read back at its offset by a fetch sent after the acknowledgement (the
// workload's final scan makes sure one is), unless retention took it (below
// the largest log start seen).
func (k *KafkaLog) Final() error {
	var missing []string
	for _, pt := range k.sortedParts() {
		offs := make([]int64, 0, len(pt.at))
		start := int64(0) // below it retention may have taken them
		if n := len(pt.starts); n > 0 {
			start = pt.starts[n-1].value
		}
		for off, s := range pt.at { // order-independent: sorted below
			if s.ackedAt != 0 && !s.readBack && k.protected(pt, s.ackCall) && off >= start {
				offs = append(offs, off)
			}
		}
		slices.Sort(offs)
		for _, off := range offs {
			s := pt.at[off]
			missing = append(missing, fmt.Sprintf("%s offset %d (%q, %s)", pt.tp, off, s.value, s.from))
			if len(missing) >= 5 {
				break
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("acknowledged records never read back after their acknowledgement: %s", strings.Join(missing, "; "))
	}
	return nil
}

// Acked reports the acknowledged end of a partition: one past the highest
// offset acknowledged (0 if none).
func (k *KafkaLog) Acked(tp KafkaTP) int64 {
	if pt := k.parts[tp]; pt != nil && len(pt.acks) > 0 {
		return pt.acks[len(pt.acks)-1].value
	}
	return 0
}

func (k *KafkaLog) sortedParts() []*kafkaPart {
	out := make([]*kafkaPart, 0, len(k.parts))
	for _, p := range k.parts { // order-independent: sorted below
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *kafkaPart) int {
		return cmp.Or(strings.Compare(a.tp.Topic, b.tp.Topic), cmp.Compare(a.tp.Partition, b.tp.Partition))
	})
	return out
}

// CheckKafka checks a recorded history: produces are sent at Call and
// answered at Return, fetches answered at Return; events are replayed in
// time order (at equal times: sends, then fetch answers, then produce
// answers).
//
// losses are the times the broker lost power (PowerLoss), applied before
// anything else that happened at the same time.
func CheckKafka(produces []KafkaProduce, fetches []KafkaFetch, durable func(topic string) bool, losses ...int64) error {
	return NewKafkaLog(durable).replay(produces, fetches, losses)
}

// replay feeds k a recorded history (as CheckKafka says) and checks Final.
func (k *KafkaLog) replay(produces []KafkaProduce, fetches []KafkaFetch, losses []int64) error {
	type event struct {
		t    int64
		rank int
		idx  int
	}
	var evs []event
	for i, p := range produces {
		evs = append(evs, event{p.Call, 0, i})
		if p.Outcome != KafkaPending {
			evs = append(evs, event{p.Return, 2, i})
		}
	}
	for i := range fetches {
		evs = append(evs, event{fetches[i].Return, 1, i})
	}
	for i, t := range losses {
		evs = append(evs, event{t, -1, i})
	}
	slices.SortStableFunc(evs, func(a, b event) int { return cmp.Or(cmp.Compare(a.t, b.t), cmp.Compare(a.rank, b.rank)) })
	for _, e := range evs {
		var err error
		switch e.rank {
		case -1:
			k.PowerLoss(losses[e.idx])
		case 0:
			err = k.ProduceSent(&produces[e.idx])
		case 1:
			err = k.Fetched(&fetches[e.idx])
		case 2:
			err = k.ProduceDone(&produces[e.idx])
		}
		if err != nil {
			return err
		}
	}
	return k.Final()
}
