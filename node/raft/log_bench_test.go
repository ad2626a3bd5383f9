package raft

import "testing"

// BenchmarkLogAppend appends entries to the in-memory log the way a keeper
// under load does: a snapshot every 75,000 entries compacts the log to the
// 50,000 before it (SnapshotKeep), so the log keeps growing from 50,000
// held entries to about 125,000.
func BenchmarkLogAppend(b *testing.B) {
	const every, keep = 75_000, 50_000
	var l raftLog
	l.reset(0, 1, 0)
	data := make([]byte, 100)
	b.ReportAllocs()
	for i := range b.N {
		idx := Index(i + 1)
		l.append(Entry{Index: idx, Term: 1, Zxid: MakeZxid(1, uint32(idx)), Data: data})
		if idx%every == 0 && idx > keep {
			l.snapIndex = idx
			l.compact(idx - keep)
		}
	}
}
