package raft

import (
	"fmt"
	"slices"
)

// raftLog is the in-memory log: entries after the latest snapshot (minus
// those compacted away), in index order without gaps.
type raftLog struct {
	snapIndex Index // entries up to here are in the snapshot
	snapTerm  Term
	snapZxid  Zxid
	// first is the index of entries[0]; first-1 is the newest entry no
	// longer held (snapIndex or a compaction point after it).
	first    Index
	prevTerm Term // term of first-1
	prevZxid Zxid
	entries  []Entry
}

func (l *raftLog) reset(index Index, term Term, zxid Zxid) {
	l.snapIndex, l.snapTerm, l.snapZxid = index, term, zxid
	l.first, l.prevTerm, l.prevZxid = index+1, term, zxid
	clear(l.entries)
	l.entries = l.entries[:0]
}

func (l *raftLog) lastIndex() Index { return l.first + Index(len(l.entries)) - 1 }

func (l *raftLog) lastTerm() Term {
	if len(l.entries) == 0 {
		return l.prevTerm
	}
	return l.entries[len(l.entries)-1].Term
}

func (l *raftLog) lastZxid() Zxid {
	if len(l.entries) == 0 {
		return l.prevZxid
	}
	return l.entries[len(l.entries)-1].Zxid
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
	return l.entries[i-l.first].Term, true
}

func (l *raftLog) at(i Index) *Entry {
	if i < l.first || i > l.lastIndex() {
		panic(fmt.Sprintf("raft: entry %d outside the log [%d, %d]", i, l.first, l.lastIndex()))
	}
	return &l.entries[i-l.first]
}

// slice returns held entries in [lo, hi], clamped.
func (l *raftLog) slice(lo, hi Index) []Entry {
	lo = max(lo, l.first)
	hi = min(hi, l.lastIndex())
	if lo > hi {
		return nil
	}
	return l.entries[lo-l.first : hi-l.first+1]
}

func (l *raftLog) append(e Entry) {
	if e.Index != l.lastIndex()+1 {
		panic(fmt.Sprintf("raft: appending entry %d after %d", e.Index, l.lastIndex()))
	}
	if e.Zxid <= l.lastZxid() {
		panic(fmt.Sprintf("raft: zxid %v of entry %d does not follow %v", e.Zxid, e.Index, l.lastZxid()))
	}
	if len(l.entries) == cap(l.entries) {
		// Double: append grows a big slice by only a quarter, and a log
		// growing to a snapshot interval's entries was copied about five
		// times its final size on the way.
		l.entries = slices.Grow(l.entries, max(len(l.entries), 1024))
	}
	l.entries = append(l.entries, e)
}

// appendReplayed appends an entry read back from the WAL without the order
// checks: replay passes through states a later record corrects (a stale
// suffix that a conflict resolution in a newer segment cuts). verify checks
// the result.
func (l *raftLog) appendReplayed(e Entry) { l.entries = append(l.entries, e) }

// verify checks that terms never decrease and zxids strictly increase,
// starting from the entry before first. It returns the index of the first
// entry that breaks the order, or 0.
func (l *raftLog) verify() Index {
	pt, pz := l.prevTerm, l.prevZxid
	for i := range l.entries {
		e := &l.entries[i]
		if e.Term < pt || e.Zxid <= pz || e.Zxid.Epoch() != e.Term {
			return e.Index
		}
		pt, pz = e.Term, e.Zxid
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
	n := int(i - l.first)
	clear(l.entries[n:])
	l.entries = l.entries[:n]
}

// compact drops held entries up to i (which must be in the snapshot).
func (l *raftLog) compact(i Index) {
	if i > l.snapIndex {
		panic(fmt.Sprintf("raft: compacting to %d past the snapshot at %d", i, l.snapIndex))
	}
	if i < l.first {
		return
	}
	e := l.at(i)
	l.prevTerm, l.prevZxid = e.Term, e.Zxid
	n := int(i - l.first + 1)
	kept := len(l.entries) - n
	if cap(l.entries) <= 4*max(len(l.entries), 1024) {
		// Keep the array, with room for as many entries as were held: the
		// log grows by about as much before the next compaction. Growing
		// it from small again copied it over and over, and a fresh array
		// (megabytes for a keeper) is a page fault per 4 KiB touched, which
		// on a virtual machine costs more than the copy.
		copy(l.entries, l.entries[n:])
		clear(l.entries[kept:]) // the moved-out entries' data can go
		l.entries = l.entries[:kept]
	} else {
		// The array is far bigger than the log (it held a long backlog
		// once): give it back.
		rest := make([]Entry, kept, max(len(l.entries), 16))
		copy(rest, l.entries[n:])
		l.entries = rest
	}
	l.first = i + 1
}
