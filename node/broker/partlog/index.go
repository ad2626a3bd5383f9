package partlog

import (
	"encoding/binary"
	"fmt"
	"math"
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

// indexChunk is the number of entries in each chunk of an in-memory index.
// An active segment's index grows by whole chunks, so at most one chunk is
// partly empty (and that one grows by doubling up to indexChunk), instead
// of a single slice that doubles and copies itself: a full 1 GiB segment
// holds its ~256 Ki entries with at most one chunk of slack.
const (
	indexChunkShift = 12
	indexChunk      = 1 << indexChunkShift
)

// chunked is an append-only sequence of entries stored in chunks of
// indexChunk (the last may be shorter).
type chunked[T any] struct {
	chunks [][]T
	n      int
}

func chunkedOf[T any](es []T) chunked[T] {
	var c chunked[T]
	for i := 0; i < len(es); i += indexChunk {
		j := min(i+indexChunk, len(es))
		c.chunks = append(c.chunks, es[i:j:j])
	}
	c.n = len(es)
	return c
}

func (c *chunked[T]) len() int   { return c.n }
func (c *chunked[T]) at(i int) T { return c.chunks[i>>indexChunkShift][i&(indexChunk-1)] }
func (c *chunked[T]) last() T    { return c.at(c.n - 1) }
func (c *chunked[T]) all() []T {
	out := make([]T, 0, c.n)
	for _, ch := range c.chunks {
		out = append(out, ch...)
	}
	return out
}

func (c *chunked[T]) push(v T) {
	k := len(c.chunks) - 1
	if k < 0 || len(c.chunks[k]) == indexChunk {
		c.chunks = append(c.chunks, nil)
		k++
	}
	c.chunks[k] = appendChunk(c.chunks[k], v)
	c.n++
}

// appendChunk appends v to a chunk, growing it by doubling up to
// indexChunk entries.
func appendChunk[T any](ch []T, v T) []T {
	if len(ch) == cap(ch) {
		grown := make([]T, len(ch), min(max(2*cap(ch), 8), indexChunk))
		copy(grown, ch)
		ch = grown
	}
	return append(ch, v)
}

// timeIndex is a time index in chunks of indexChunk entries. Within a
// chunk, timestamps (which strictly increase) are kept as 32-bit deltas from
// the chunk's first one, so an entry takes 8 bytes instead of 16 (a padded
// timeEntry); a chunk whose timestamps span more than 2^32 ms (49 days)
// keeps full entries instead.
type timeIndex struct {
	chunks []timeChunk
	n      int
}

type timeChunk struct {
	base   int64        // the first entry's timestamp
	narrow []narrowTime // entries as deltas from base, unless wide is set
	wide   []timeEntry
}

type narrowTime struct{ delta, rel uint32 }

func timeIndexOf(es []timeEntry) timeIndex {
	var t timeIndex
	for _, e := range es {
		t.push(e)
	}
	return t
}

func (t *timeIndex) len() int        { return t.n }
func (t *timeIndex) last() timeEntry { return t.at(t.n - 1) }

func (t *timeIndex) at(i int) timeEntry {
	c := &t.chunks[i>>indexChunkShift]
	j := i & (indexChunk - 1)
	if c.wide != nil {
		return c.wide[j]
	}
	e := c.narrow[j]
	return timeEntry{ts: c.base + int64(e.delta), rel: e.rel}
}

func (t *timeIndex) all() []timeEntry {
	out := make([]timeEntry, t.n)
	for i := range out {
		out[i] = t.at(i)
	}
	return out
}

func (t *timeIndex) push(e timeEntry) {
	k := len(t.chunks) - 1
	if k < 0 || len(t.chunks[k].narrow)+len(t.chunks[k].wide) == indexChunk {
		t.chunks = append(t.chunks, timeChunk{base: e.ts})
		k++
	}
	c := &t.chunks[k]
	t.n++
	if c.wide == nil {
		if d := e.ts - c.base; d >= 0 && d <= math.MaxUint32 {
			c.narrow = appendChunk(c.narrow, narrowTime{delta: uint32(d), rel: e.rel})
			return
		}
		c.wide = make([]timeEntry, len(c.narrow), indexChunk)
		for j, x := range c.narrow {
			c.wide[j] = timeEntry{ts: c.base + int64(x.delta), rel: x.rel}
		}
		c.narrow = nil
	}
	c.wide = append(c.wide, e)
}

// segIndex is one segment's two sparse indexes, in memory.
type segIndex struct {
	offsets chunked[indexEntry]
	times   timeIndex
}

func newSegIndex(offs []indexEntry, times []timeEntry) *segIndex {
	return &segIndex{offsets: chunkedOf(offs), times: timeIndexOf(times)}
}

// search returns the number of offset entries whose relative offset is at
// most rel.
func (ix *segIndex) search(rel uint32) int {
	return sort.Search(ix.offsets.len(), func(i int) bool { return ix.offsets.at(i).rel > rel })
}

// lookup returns the position to start scanning for relative offset rel.
func (ix *segIndex) lookup(rel uint32) int64 {
	i := ix.search(rel)
	if i == 0 {
		return 0
	}
	return int64(ix.offsets.at(i - 1).pos)
}

// lookupSpan is lookup plus the distance from that position to the next
// entry's (0 if there is none). The batch holding rel starts within that
// span (its end included): entries map a batch's last offset to its
// position, so for the first offset of a batch lookup returns the batch
// before it.
func (ix *segIndex) lookupSpan(rel uint32) (pos, span int64) {
	i := ix.search(rel)
	if i > 0 {
		pos = int64(ix.offsets.at(i - 1).pos)
	}
	if i < ix.offsets.len() {
		span = int64(ix.offsets.at(i).pos) - pos
	}
	return pos, span
}

// boundaryAfter returns the position of the first offset entry beyond pos
// (a batch boundary), or -1 if there is none.
func (ix *segIndex) boundaryAfter(pos int64) int64 {
	n := ix.offsets.len()
	i := sort.Search(n, func(i int) bool { return int64(ix.offsets.at(i).pos) > pos })
	if i == n {
		return -1
	}
	return int64(ix.offsets.at(i).pos)
}

// lookupTime returns a relative offset at or before the first batch whose
// max timestamp is >= ts: the last entry with a smaller timestamp. Batches
// up to it all have max timestamps below ts, so nothing before it matters.
func (ix *segIndex) lookupTime(ts int64) uint32 {
	i := sort.Search(ix.times.len(), func(i int) bool { return ix.times.at(i).ts >= ts })
	if i == 0 {
		return 0
	}
	return ix.times.at(i - 1).rel
}

func encodeOffsetIndex(c *chunked[indexEntry]) []byte {
	out := make([]byte, 0, c.len()*offsetEntrySize)
	for _, ch := range c.chunks {
		for _, e := range ch {
			out = binary.BigEndian.AppendUint32(out, e.rel)
			out = binary.BigEndian.AppendUint32(out, e.pos)
		}
	}
	return out
}

func encodeTimeIndex(t *timeIndex) []byte {
	out := make([]byte, 0, t.len()*timeEntrySize)
	for i := range t.len() {
		e := t.at(i)
		out = binary.BigEndian.AppendUint64(out, uint64(e.ts))
		out = binary.BigEndian.AppendUint32(out, e.rel)
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
