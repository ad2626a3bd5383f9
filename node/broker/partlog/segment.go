package partlog

import (
	"herd/node"
)

// segment is one .log file and what partlog remembers about it. Sealed
// segments keep only a few numbers resident; their indexes live in their
// files and are loaded into the Dir's small cache when a read needs them.
// The active (last) segment keeps its indexes in memory until it is sealed.
type segment struct {
	base    int64  // first offset; the file names
	logPath string // the .log file's path, once computed
	size    int64  // bytes of the .log written or submitted for writing
	next    int64  // offset after its last batch; base when empty

	maxTS       int64 // largest batch maxTimestamp, -1 if none
	maxTSOffset int64 // last offset of the batch that set maxTS
	openedAt    node.Time
	hasOpened   bool // openedAt is set (at the first append)

	// ix is the in-memory index: always set while active, a cache entry
	// (or nil) once sealed.
	ix         *segIndex
	sinceIndex int // bytes appended since the last offset index entry
	// verifiedFrom: batches at or after this file position were checked
	// (CRC included) by this process, by Append or by a recovery scan, so
	// a read serves them without recomputing their CRC. Batches before it
	// were trusted from a previous incarnation without being scanned.
	verifiedFrom int64
	sealed       bool
	deleted      bool

	dirty      bool // .log has writes no submitted sync covers
	indexDirty bool // index files written, not yet covered by a sync
	queued     bool // on the log's list of segments the next flush syncs
}

func newSegment(base int64) *segment {
	return &segment{base: base, next: base, maxTS: -1, maxTSOffset: -1, ix: &segIndex{}}
}

// track records batch h, written at pos, in the in-memory indexes, as
// Kafka's LogSegment.append does: an offset index entry (the batch's last
// offset and its position) once more than interval bytes were appended
// since the previous entry, and with it a time index entry if the largest
// timestamp grew. O(1) per batch, never per record.
func (s *segment) track(h *batchHeader, pos int64, interval, maxEntries int) {
	if h.maxTimestamp > s.maxTS {
		s.maxTS, s.maxTSOffset = h.maxTimestamp, h.lastOffset()
	}
	if s.sinceIndex > interval && s.ix.offsets.len() < maxEntries {
		s.ix.offsets.push(indexEntry{rel: uint32(h.lastOffset() - s.base), pos: uint32(pos)})
		s.maybeTimeEntry()
		s.sinceIndex = 0
	}
	s.sinceIndex += h.size
}

// maybeTimeEntry appends (max timestamp so far, its offset) to the time
// index if the maximum grew since the last entry.
func (s *segment) maybeTimeEntry() {
	if s.maxTS < 0 {
		return
	}
	t := &s.ix.times
	if t.len() > 0 && t.last().ts >= s.maxTS {
		return
	}
	t.push(timeEntry{ts: s.maxTS, rel: uint32(s.maxTSOffset - s.base)})
}

func (s *segment) empty() bool { return s.next == s.base }

// checkInvariants panics if the segment's bookkeeping is inconsistent.
func (s *segment) checkInvariants() {
	if s.next < s.base || s.size < 0 || (s.size == 0) != (s.next == s.base) {
		panic("partlog: segment bookkeeping broken")
	}
	if s.ix != nil {
		o := &s.ix.offsets
		if o.len() > 0 && (int64(o.last().pos) >= s.size || s.base+int64(o.last().rel) >= s.next) {
			panic("partlog: offset index entry beyond the segment")
		}
	}
}

// indexCache bounds how many sealed segments' indexes are resident: reads
// of old data load them on demand, so memory does not grow with the data
// stored.
type indexCache struct {
	segs []*segment // least recently used first
}

const indexCacheSize = 16

func (c *indexCache) touch(s *segment) {
	for i, x := range c.segs {
		if x == s {
			copy(c.segs[i:], c.segs[i+1:])
			c.segs[len(c.segs)-1] = s
			return
		}
	}
	if len(c.segs) == indexCacheSize {
		c.segs[0].ix = nil
		copy(c.segs, c.segs[1:])
		c.segs = c.segs[:len(c.segs)-1]
	}
	c.segs = append(c.segs, s)
}

func (c *indexCache) drop(s *segment) {
	for i, x := range c.segs {
		if x == s {
			c.segs = append(c.segs[:i], c.segs[i+1:]...)
			return
		}
	}
}
