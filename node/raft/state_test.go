package raft

import (
	"testing"

	"pgregory.net/rapid"
)

// The state file survives a torn or corrupt slot and a misdirected slot
// write: the newest intact slot always wins, and never an older one when a
// newer intact one exists.
func TestStateFileSlots(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		file := make([]byte, 2*stateSlot)
		var written []hardState
		for seq := uint64(1); seq <= uint64(rapid.IntRange(1, 10).Draw(t, "writes")); seq++ {
			h := hardState{Seq: seq, Term: Term(rapid.Uint32().Draw(t, "term")), Vote: ID(rapid.IntRange(0, 5).Draw(t, "vote")),
				Commit: Index(rapid.Uint32().Draw(t, "commit")), Abstain: rapid.Bool().Draw(t, "abstain")}
			off, slot := encodeStateSlot(h)
			if rapid.IntRange(0, 9).Draw(t, "misdirect") == 0 {
				off = stateSlot - off // lands on the other slot
			}
			copy(file[off:], slot)
			written = append(written, h)
		}
		damaged := -1
		if rapid.Bool().Draw(t, "damage") {
			at := rapid.IntRange(0, len(file)-1).Draw(t, "at")
			file[at] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
			damaged = at / stateSlot
		}
		got, valid := decodeStateFile(file)
		if valid == 0 {
			if damaged < 0 {
				t.Fatal("an undamaged state file has no valid slot")
			}
			return
		}
		// got must be one of the writes, and no newer intact write may exist.
		found := false
		for _, h := range written {
			found = found || h == got
		}
		if !found {
			t.Fatalf("decoded %+v, which was never written", got)
		}
		last := written[len(written)-1]
		lastOff, _ := encodeStateSlot(last)
		if got != last && int(lastOff/stateSlot) != damaged {
			// The last write landed intact somewhere (its own slot or, if
			// misdirected, the other), unless damage hit where it landed.
			if damaged < 0 {
				t.Fatalf("decoded %+v, but %+v was written last and nothing was damaged", got, last)
			}
		}
	})
}

func TestLogVerify(t *testing.T) {
	var l raftLog
	l.reset(10, 2, MakeZxid(2, 5))
	l.appendReplayed(Entry{Index: 11, Term: 2, Zxid: MakeZxid(2, 6), Type: EntryNormal})
	l.appendReplayed(Entry{Index: 12, Term: 3, Zxid: MakeZxid(3, 1), Type: EntryNoop})
	if bad := l.verify(); bad != 0 {
		t.Fatalf("ordered log flagged at %d", bad)
	}
	l.appendReplayed(Entry{Index: 13, Term: 2, Zxid: MakeZxid(2, 7), Type: EntryNormal}) // a stale suffix
	if bad := l.verify(); bad != 13 {
		t.Fatalf("stale entry not flagged: %d", bad)
	}
	l.truncateFrom(13)
	l.appendReplayed(Entry{Index: 13, Term: 4, Zxid: MakeZxid(3, 9), Type: EntryNormal}) // zxid epoch != term
	if bad := l.verify(); bad != 13 {
		t.Fatalf("zxid epoch mismatch not flagged: %d", bad)
	}
}

func TestSnapshotFile(t *testing.T) {
	meta := snapMeta{Index: 42, Term: 3, Zxid: MakeZxid(3, 9), VoidsOlderLog: true, WALSeq: 7}
	file := encodeSnapshot(meta, []byte("state"))
	got, data, err := decodeSnapshot(file)
	if err != nil || got != meta || string(data) != "state" {
		t.Fatalf("%+v %q %v", got, data, err)
	}
	for i := range file {
		bad := append([]byte(nil), file...)
		bad[i] ^= 0x10
		if _, _, err := decodeSnapshot(bad); err == nil {
			t.Fatalf("flip at byte %d not detected", i)
		}
	}
}
