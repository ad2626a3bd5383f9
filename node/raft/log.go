package raft

import "fmt"

// defaultLogChunk is how many entries one chunk of the in-memory log holds
// by default (about 230 KB of Entry headers; the data is referenced, not
// held). Config.LogChunk overrides it.
const defaultLogChunk = 4096

// raftLog is the in-memory log: the newest entries, in index order without
// gaps, from some point at or before the latest snapshot's index (storage.
// compacted) or, once every server holds them, after it (Raft.trimLog).
//
// The entries live in chunks of Config.LogChunk entries rather than one
// array. One array had to be copied whole whenever it grew, in the loop,
// while the old copy stayed live for the collector: with snapCount far above
// a run's writes a keeper's log grew past a million entries and sets' p999
// rose to 1.3-2.5 s (0.2-0.3 s with chunks; DESIGN.md, sections 6 and 11).
// Chunks grow the log a chunk at a time, compaction drops whole chunks
// instead of moving the kept entries down, and emptied chunks are reused (up
// to twice as many as the log keeps), because a fresh chunk is a page fault
// per 4 KiB touched (dear on a virtual machine).
type raftLog struct {
	snapIndex Index // entries up to here are in the snapshot
	snapTerm  Term
	snapZxid  Zxid
	// first is the index of the first held entry; first-1 is the newest
	// entry no longer held (snapIndex or a compaction point after it).
	first    Index
	prevTerm Term // term of first-1
	prevZxid Zxid
	// chunks hold the entries: entry first is chunks[0][head], and each
	// chunk's length is how far it is filled (every chunk but the last is
	// full). Slots of chunks[0] before head are zero.
	chunks [][]Entry
	head   int
	n      int       // entries held
	spare  [][]Entry // emptied chunks (length 0) for reuse
	shift  uint8     // a chunk holds 1<<shift entries
}

func (l *raftLog) chunkLen() int { return 1 << l.shift }

func (l *raftLog) reset(index Index, term Term, zxid Zxid) {
	l.snapIndex, l.snapTerm, l.snapZxid = index, term, zxid
	l.first, l.prevTerm, l.prevZxid = index+1, term, zxid
	for _, c := range l.chunks {
		l.recycle(c, 0)
	}
	clear(l.chunks)
	l.chunks = l.chunks[:0]
	l.head, l.n = 0, 0
	l.trimSpare()
}

// pos returns the chunk and slot of the held entry at index i.
func (l *raftLog) pos(i Index) (chunk, slot int) {
	q := l.head + int(i-l.first)
	return q >> l.shift, q & (l.chunkLen() - 1)
}

func (l *raftLog) lastIndex() Index { return l.first + Index(l.n) - 1 }

func (l *raftLog) last() *Entry {
	c := l.chunks[len(l.chunks)-1]
	return &c[len(c)-1]
}

func (l *raftLog) lastTerm() Term {
	if l.n == 0 {
		return l.prevTerm
	}
	return l.last().Term
}

func (l *raftLog) lastZxid() Zxid {
	if l.n == 0 {
		return l.prevZxid
	}
	return l.last().Zxid
}

// term returns the term of the entry at i, and false if i is neither held
// nor first-1.
func (l *raftLog) term(i Index) (Term, bool) {
	switch {
	case i == l.first-1:
		return l.prevTerm, true
	case i < l.first || i > l.lastIndex():
		return 0, false
	}
	return l.at(i).Term, true
}

func (l *raftLog) at(i Index) *Entry {
	if i < l.first || i > l.lastIndex() {
		panic(fmt.Sprintf("raft: entry %d outside the log [%d, %d]", i, l.first, l.lastIndex()))
	}
	c, k := l.pos(i)
	return &l.chunks[c][k]
}

// slice returns held entries from lo (clamped to the log) on, up to hi, as
// far as they lie in one chunk: possibly fewer than asked for, never none
// when lo..hi holds any. The result aliases the log; callers that need the
// whole range (Raft.Entries) gather it chunk by chunk.
func (l *raftLog) slice(lo, hi Index) []Entry {
	lo = max(lo, l.first)
	hi = min(hi, l.lastIndex())
	if lo > hi {
		return nil
	}
	c, k := l.pos(lo)
	end := min(len(l.chunks[c]), k+int(hi-lo)+1)
	return l.chunks[c][k:end:end]
}

// grow makes room for one more entry at the end.
func (l *raftLog) grow() {
	if len(l.chunks) > 0 && len(l.chunks[len(l.chunks)-1]) < l.chunkLen() {
		return
	}
	var c []Entry
	if k := len(l.spare); k > 0 {
		c, l.spare[k-1] = l.spare[k-1], nil
		l.spare = l.spare[:k-1]
	} else {
		c = make([]Entry, 0, l.chunkLen())
	}
	l.chunks = append(l.chunks, c)
}

func (l *raftLog) append(e Entry) {
	if e.Index != l.lastIndex()+1 {
		panic(fmt.Sprintf("raft: appending entry %d after %d", e.Index, l.lastIndex()))
	}
	if e.Zxid <= l.lastZxid() {
		panic(fmt.Sprintf("raft: zxid %v of entry %d does not follow %v", e.Zxid, e.Index, l.lastZxid()))
	}
	l.appendReplayed(e)
}

// appendReplayed appends an entry read back from the WAL without the order
// checks: replay passes through states a later record corrects (a stale
// suffix that a conflict resolution in a newer segment cuts). verify checks
// the result.
func (l *raftLog) appendReplayed(e Entry) {
	l.grow()
	k := len(l.chunks) - 1
	l.chunks[k] = append(l.chunks[k], e)
	l.n++
}

// verify checks that terms never decrease and zxids strictly increase,
// starting from the entry before first. It returns the index of the first
// entry that breaks the order, or 0.
func (l *raftLog) verify() Index {
	pt, pz := l.prevTerm, l.prevZxid
	for i := l.first; i <= l.lastIndex(); {
		run := l.slice(i, l.lastIndex())
		for k := range run {
			e := &run[k]
			if e.Term < pt || e.Zxid <= pz || e.Zxid.Epoch() != e.Term {
				return e.Index
			}
			pt, pz = e.Term, e.Zxid
		}
		i += Index(len(run))
	}
	return 0
}

// truncateFrom drops entries at i and after.
func (l *raftLog) truncateFrom(i Index) {
	if i < l.first {
		panic(fmt.Sprintf("raft: truncating at %d, before the first held entry %d", i, l.first))
	}
	if i > l.lastIndex() {
		return
	}
	l.n = int(i - l.first)
	end := l.head + l.n // slots in use, counted from chunks[0][0]
	keepChunks := (end + l.chunkLen() - 1) >> l.shift
	for len(l.chunks) > keepChunks {
		k := len(l.chunks) - 1
		l.recycle(l.chunks[k], keepChunks)
		l.chunks[k] = nil
		l.chunks = l.chunks[:k]
	}
	if k := len(l.chunks) - 1; k >= 0 {
		c := l.chunks[k]
		used := end - k<<l.shift
		clear(c[used:])
		l.chunks[k] = c[:used]
	}
	l.trimSpare()
}

// recycle clears chunk c and keeps it for reuse while there are at most
// twice as many spare chunks as inUse, the chunks the log keeps: the log
// grows by about as much as a compaction dropped before the next one, and a
// log that once held a long backlog gives the memory back as it shrinks.
func (l *raftLog) recycle(c []Entry, inUse int) {
	clear(c) // the entries' data can go
	if len(l.spare) <= 2*inUse {
		l.spare = append(l.spare, c[:0])
	}
}

// trimSpare lets spare chunks beyond recycle's bound go.
func (l *raftLog) trimSpare() {
	if keep := 2*len(l.chunks) + 1; len(l.spare) > keep {
		clear(l.spare[keep:])
		l.spare = l.spare[:keep]
	}
}

// compact drops held entries up to i, which the caller has applied: in
// the snapshot, or (Raft.trimLog) held by every server.
func (l *raftLog) compact(i Index) {
	if i > l.lastIndex() {
		panic(fmt.Sprintf("raft: compacting to %d past the log's last entry %d", i, l.lastIndex()))
	}
	if i < l.first {
		return
	}
	e := l.at(i)
	l.prevTerm, l.prevZxid = e.Term, e.Zxid
	k := int(i - l.first + 1)
	l.first = i + 1
	l.n -= k
	head := l.head + k
	drop := head >> l.shift // chunks all of whose slots are gone
	if l.n == 0 {
		drop, head = len(l.chunks), 0
	} else {
		head &= l.chunkLen() - 1
		clear(l.chunks[drop][:head]) // the dropped entries' data can go
	}
	for _, c := range l.chunks[:drop] {
		l.recycle(c, len(l.chunks)-drop)
	}
	m := copy(l.chunks, l.chunks[drop:])
	clear(l.chunks[m:])
	l.chunks = l.chunks[:m]
	l.head = head
	l.trimSpare()
}
