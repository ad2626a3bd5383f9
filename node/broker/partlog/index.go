package partlog

import (
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
)

// Segment file names: the base offset in 20 digits, as Kafka names them, so
// a lexical listing is in offset order.
const (
	logSuffix       = ".log"
	indexSuffix     = ".index"
	timeIndexSuffix = ".timeindex"
	deletedSuffix   = ".deleted" // a segment file on its way out
	tmpSuffix       = ".tmp"     // a file being replaced atomically

	offsetEntrySize = 8  // relative offset u32, position u32
	timeEntrySize   = 12 // timestamp i64, relative offset u32
)

func segmentName(base int64, suffix string) string { return fmt.Sprintf("%020d%s", base, suffix) }

// parseSegmentName returns the base offset of a segment file name with the
// given suffix.
func parseSegmentName(name, suffix string) (int64, bool) {
	if len(name) != 20+len(suffix) || name[20:] != suffix {
		return 0, false
	}
	for _, c := range name[:20] {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(name[:20], 10, 64)
	return v, err == nil
}

// indexEntry maps the last offset of a batch (relative to the segment's
// base) to the file position where that batch starts. Looking up any offset
// gives a position at or before the batch holding it, from which a forward
// scan over batch headers finds it.
type indexEntry struct {
	rel uint32
	pos uint32
}

// timeEntry records that the largest timestamp among batches up to relative
// offset rel is ts (Kafka's "max timestamp so far").
type timeEntry struct {
	ts  int64
	rel uint32
}

// segIndex is one segment's two sparse indexes, in memory.
type segIndex struct {
	offsets []indexEntry
	times   []timeEntry
}

// lookup returns the position to start scanning for relative offset rel.
func (ix *segIndex) lookup(rel uint32) int64 {
	i := sort.Search(len(ix.offsets), func(i int) bool { return ix.offsets[i].rel > rel })
	if i == 0 {
		return 0
	}
	return int64(ix.offsets[i-1].pos)
}

// lookupSpan is lookup plus the distance from that position to the next
// entry's (0 if there is none). The batch holding rel starts within that
// span: entries map a batch's last offset to its position, so for the
// first offset of a batch lookup returns the batch before it.
func (ix *segIndex) lookupSpan(rel uint32) (pos, span int64) {
	i := sort.Search(len(ix.offsets), func(i int) bool { return ix.offsets[i].rel > rel })
	if i > 0 {
		pos = int64(ix.offsets[i-1].pos)
	}
	if i < len(ix.offsets) {
		span = int64(ix.offsets[i].pos) - pos
	}
	return pos, span
}

// lookupTime returns a relative offset at or before the first batch whose
// max timestamp is >= ts: the last entry with a smaller timestamp. Batches
// up to it all have max timestamps below ts, so nothing before it matters.
func (ix *segIndex) lookupTime(ts int64) uint32 {
	i := sort.Search(len(ix.times), func(i int) bool { return ix.times[i].ts >= ts })
	if i == 0 {
		return 0
	}
	return ix.times[i-1].rel
}

func encodeOffsetIndex(es []indexEntry) []byte {
	out := make([]byte, len(es)*offsetEntrySize)
	for i, e := range es {
		binary.BigEndian.PutUint32(out[i*offsetEntrySize:], e.rel)
		binary.BigEndian.PutUint32(out[i*offsetEntrySize+4:], e.pos)
	}
	return out
}

func encodeTimeIndex(es []timeEntry) []byte {
	out := make([]byte, len(es)*timeEntrySize)
	for i, e := range es {
		binary.BigEndian.PutUint64(out[i*timeEntrySize:], uint64(e.ts))
		binary.BigEndian.PutUint32(out[i*timeEntrySize+8:], e.rel)
	}
	return out
}

// decodeOffsetIndex parses an .index file of a segment of logSize bytes
// holding offsets below base+span, and rejects anything a correct writer
// could not have produced: the file is a cache, so when in doubt the caller
// rebuilds it from the .log.
func decodeOffsetIndex(b []byte, logSize int64, span int64) ([]indexEntry, bool) {
	if len(b)%offsetEntrySize != 0 {
		return nil, false
	}
	es := make([]indexEntry, len(b)/offsetEntrySize)
	for i := range es {
		e := indexEntry{
			rel: binary.BigEndian.Uint32(b[i*offsetEntrySize:]),
			pos: binary.BigEndian.Uint32(b[i*offsetEntrySize+4:]),
		}
		if int64(e.pos) >= logSize || int64(e.rel) >= span {
			return nil, false
		}
		if i > 0 && (e.rel <= es[i-1].rel || e.pos <= es[i-1].pos) {
			return nil, false
		}
		es[i] = e
	}
	return es, true
}

func decodeTimeIndex(b []byte, span int64) ([]timeEntry, bool) {
	if len(b)%timeEntrySize != 0 {
		return nil, false
	}
	es := make([]timeEntry, len(b)/timeEntrySize)
	for i := range es {
		e := timeEntry{
			ts:  int64(binary.BigEndian.Uint64(b[i*timeEntrySize:])),
			rel: binary.BigEndian.Uint32(b[i*timeEntrySize+8:]),
		}
		if int64(e.rel) >= span {
			return nil, false
		}
		if i > 0 && (e.ts <= es[i-1].ts || e.rel < es[i-1].rel) {
			return nil, false
		}
		es[i] = e
	}
	return es, true
}
