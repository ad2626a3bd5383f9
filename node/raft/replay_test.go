package raft

import (
	"strings"
	"testing"

	"herd/disk"
	"herd/node"
)

// heldAtApply is a state machine that records, at every apply, how many
// entries the server's in-memory log holds.
type heldAtApply struct {
	r       *Raft
	applied []Index
	terms   []Term // of each entry in applied
	maxHeld int
}

func (h *heldAtApply) Apply(e *Entry) {
	h.applied = append(h.applied, e.Index)
	h.terms = append(h.terms, e.Term)
	h.maxHeld = max(h.maxHeld, h.r.log.n)
}
func (h *heldAtApply) Snapshot() []byte                           { return nil }
func (h *heldAtApply) Restore(data []byte, i Index, z Zxid) error { return nil }

// walWithHints writes segs segments of per entries each (term 1), each
// entry followed by a hard state whose commit hint trails it by lag.
func walWithHints(t *testing.T, env *diskEnv, segs, per int, lag Index) {
	t.Helper()
	if ev := disk.Exec(env.fs, 0, node.MkdirOp("raft")); ev.Err != nil {
		t.Fatal(ev.Err)
	}
	i, seq := Index(1), uint64(0)
	for k := 0; k < segs; k++ {
		first := i
		recs := appendSegmentRec(nil, segmentInfo{Seq: uint64(k + 1), FirstIndex: first})
		for n := 0; n < per; n++ {
			recs = appendEntryRec(recs, &Entry{Index: i, Term: 1, Zxid: MakeZxid(1, uint32(i)), Type: EntryNormal})
			seq++
			recs = appendStateRec(recs, hardState{Seq: seq, Term: 1, Vote: 1, Commit: max(i, lag) - lag})
			i++
		}
		env.write(t, "raft/"+segmentName(uint64(k+1), first), encodeBatch(nil, 0, recs))
	}
}

// A restart applies what the replayed commit hint covers segment by
// segment and trims behind it, so it never holds the whole WAL since the
// snapshot in memory: here 10 segments of 50 entries, SnapshotKeep 8, and
// at no apply did the log hold more than one segment's entries beyond
// that (before, all 500 until the leader said what every server holds).
func TestReplayAppliesAndTrims(t *testing.T) {
	env := &diskEnv{fs: disk.NewSimFS()}
	walWithHints(t, env, 10, 50, 3)
	sm := &heldAtApply{}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}},
		SnapshotEvery: 1000, SnapshotKeep: 8, LogChunk: 4, LogKeep: -1}, sm, Hooks{})
	sm.r = r
	r.Start()
	env.run(r)
	if env.halted != "" || !r.ready {
		t.Fatalf("recovery did not finish (halted %q)", env.halted)
	}
	if r.applied != 497 || r.commit != 497 || r.log.lastIndex() != 500 || r.abstain {
		t.Fatalf("applied %d, commit %d, last %d, abstain %v; want 497, 497, 500, false", r.applied, r.commit, r.log.lastIndex(), r.abstain)
	}
	for k, i := range sm.applied {
		if i != Index(k+1) {
			t.Fatalf("apply %d was entry %d", k+1, i)
		}
	}
	if bound := 8 + 4 + 50; sm.maxHeld > bound {
		t.Fatalf("the log held %d entries at an apply, want at most %d (SnapshotKeep + a chunk + a segment)", sm.maxHeld, bound)
	}
	if first := r.log.first; first < 497-8-4 {
		t.Fatalf("after recovery the log starts at %d, want within SnapshotKeep and a chunk of 497", first)
	}
}

// A record that restates an entry applied during the replay contradicts
// the commit hint that let it be applied (a server never rewrites a
// committed entry): recovery halts rather than apply a second history.
func TestReplayHaltsOnRewriteOfApplied(t *testing.T) {
	env := &diskEnv{fs: disk.NewSimFS()}
	walWithHints(t, env, 2, 20, 0)
	// A third segment that starts inside what the first two committed.
	recs := appendSegmentRec(nil, segmentInfo{Seq: 3, FirstIndex: 30})
	recs = appendEntryRec(recs, &Entry{Index: 30, Term: 2, Zxid: MakeZxid(2, 1), Type: EntryNormal})
	env.write(t, "raft/"+segmentName(3, 30), encodeBatch(nil, 0, recs))
	sm := &heldAtApply{}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, sm, Hooks{})
	sm.r = r
	r.Start()
	env.run(r)
	if !strings.Contains(env.halted, "rewrites entry 30") || r.ready {
		t.Fatalf("halted %q, ready %v; want a halt for the rewrite of entry 30", env.halted, r.ready)
	}
}

// With SnapshotLogRatio a snapshot waits, past SnapshotEvery's draw, until
// the WAL written since the last one is that many times its size.
func TestSnapshotWaitsForLogRatio(t *testing.T) {
	env := &diskEnv{fs: disk.NewSimFS()}
	walWithHints(t, env, 1, 20, 0)
	sm := &heldAtApply{}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}},
		SnapshotEvery: 1000, SnapshotLogRatio: 2}, sm, Hooks{})
	sm.r = r
	r.Start()
	env.run(r)
	if !r.ready || r.applied != 20 {
		t.Fatalf("recovery: ready %v, applied %d (halted %q)", r.ready, r.applied, env.halted)
	}
	s := &r.st
	if s.snapshotting || s.snap.name != "" {
		t.Fatal("took a snapshot at recovery, SnapshotEvery 1000")
	}
	s.snapGap = 1 // as if SnapshotEvery had drawn 1
	s.snap.size = 1000
	s.walSinceSnap = 1999
	s.maybeSnapshot()
	if s.snapshotting {
		t.Fatal("snapshot of 1000 bytes, ratio 2, 1999 bytes of WAL since: took a snapshot")
	}
	s.walSinceSnap = 2000
	s.maybeSnapshot()
	if !s.snapshotting {
		t.Fatal("snapshot of 1000 bytes, ratio 2, 2000 bytes of WAL since: no snapshot")
	}
	if s.walSinceSnap != 0 {
		t.Fatalf("a snapshot begun leaves %d bytes counted since it", s.walSinceSnap)
	}
	// While a server lags the log is not trimmed between snapshots: past
	// SnapshotEvery + SnapshotKeep entries held, the ratio no longer waits.
	s.snapshotting = false
	s.snapGap = 1
	s.snap.meta.Index, s.walSinceSnap = 0, 0
	r.cfg.SnapshotEvery, r.cfg.SnapshotKeep = 11, 8
	s.maybeSnapshot()
	if !s.snapshotting {
		t.Fatal("20 entries held, SnapshotEvery 11 + SnapshotKeep 8: the ratio still held the snapshot back")
	}
}

// Recovery writes the state file before it syncs the segments it read,
// which may be a killed predecessor's page cache: a commit hint in it must
// not come from them. With the hint that the replay applied in it, a power
// loss kept the state file and lost the newest segment, and the next
// recovery applied a stale entry under the hint (consensus seed 144564469).
func TestRecoveryStateFileHasNoReplayedHint(t *testing.T) {
	env := &diskEnv{fs: disk.NewSimFS()}
	walWithHints(t, env, 3, 20, 0)
	sm := &heldAtApply{}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, sm, Hooks{})
	sm.r = r
	r.Start()
	env.run(r)
	if !r.ready || r.applied != 60 {
		t.Fatalf("recovery: ready %v, applied %d (halted %q)", r.ready, r.applied, env.halted)
	}
	ev := disk.Exec(env.fs, 0, node.ReadOp("raft/"+stateFile, 0, 4096))
	if ev.Err != nil {
		t.Fatal(ev.Err)
	}
	hs, valid := decodeStateFile(ev.Data)
	if valid == 0 || hs.Commit != 0 {
		t.Fatalf("state file written at recovery: commit %d (valid %d), want 0: the replayed hint is not durable yet", hs.Commit, valid)
	}
}

// The state file is written behind a WAL batch's sync in the same queue,
// but whether that sync succeeded is learned only after both: a commit hint
// in it must not count on the batch. Here a follower holds entries 1-20 of
// term 1 (18 committed); a term-2 leader replaces 19 and 20 and says 20 is
// committed; the WAL's sync fails and the server crashes before it learns
// so, while the state file (new term, so written) reaches the disk. With
// the leader's commit in the state file, the next recovery applied the
// stale term-1 entries 19 and 20 under it (consensus seed 144577706).
func TestStateFileHintWaitsForTheBatch(t *testing.T) {
	fs := disk.NewSimFS()
	walWithHints(t, &diskEnv{fs: fs}, 1, 20, 2)
	r, env := recoverOn(fs)
	if !r.ready || r.commit != 18 || r.log.lastIndex() != 20 {
		t.Fatalf("recovery: ready %v, commit %d, last %d (halted %q)", r.ready, r.commit, r.log.lastIndex(), env.halted)
	}
	env.fs.FailNext(node.OpSync, nil) // the batch's, the first sync queued
	r.step(&message{typ: mApp, from: 1, term: 2, prevIndex: 18, prevTerm: 1, commit: 20, commitTerm: 2,
		entries: []Entry{{Index: 19, Term: 2, Zxid: MakeZxid(2, 1), Type: EntryNormal}, {Index: 20, Term: 2, Zxid: MakeZxid(2, 2), Type: EntryNormal}}})
	r.Flush()
	if r.term != 2 || r.commit != 20 {
		t.Fatalf("after the append: term %d, commit %d", r.term, r.commit)
	}
	ev := disk.Exec(env.fs, 0, node.ReadOp("raft/"+stateFile, 0, 4096))
	if ev.Err != nil {
		t.Fatal(ev.Err)
	}
	if hs, valid := decodeStateFile(ev.Data); valid == 0 || hs.Term != 2 || hs.Commit > 18 {
		t.Errorf("state file written behind the batch: term %d, commit %d (valid %d); want term 2 and a commit of at most 18, what was durable before it", hs.Term, hs.Commit, valid)
	}
	// Whatever a power loss keeps of the unsynced batch, a recovery
	// applies no term-1 entry past 18.
	for seed := uint64(1); seed <= 20; seed++ {
		r2, _ := recoverOn(fs.Crash(node.NewRand(&countingSource{n: seed * 12345})))
		sm := r2.sm.(*heldAtApply)
		for k, i := range sm.applied {
			if i >= 19 && sm.terms[k] != 2 {
				t.Fatalf("crash seed %d: recovery applied entry %d of term %d (commit %d); only term 2's is committed", seed, i, sm.terms[k], r2.commit)
			}
		}
	}
}
