package raft

import "testing"

// trimServer builds server 1 (the leader) or 2 of three in term 3, holding
// entries 1..n of term 3, committed and durable, with LogKeep keep and
// chunks of chunk entries.
func trimServer(t *testing.T, id ID, n, keep, chunk int) *Raft {
	t.Helper()
	peers := []Peer{{ID: 1, Addr: "x"}, {ID: 2, Addr: "x"}, {ID: 3, Addr: "x"}}
	r := New(stubEnv{}, Config{ID: id, Peers: peers, LogKeep: keep, LogChunk: chunk}, &applyRecorder{}, Hooks{})
	r.term = 3
	r.log.reset(0, 0, 0)
	for i := 1; i <= n; i++ {
		r.log.append(Entry{Index: Index(i), Term: 3, Zxid: MakeZxid(3, uint32(i)), Type: EntryNormal})
	}
	r.st.durable = Index(n)
	r.st.open = true // recovered: taking part
	r.commit = Index(n)
	if id == 1 {
		r.role, r.leader = Leader, 1
	} else {
		r.role, r.leader = Follower, 1
	}
	return r
}

// The in-memory log keeps LogKeep entries behind the point every server
// holds durably and this one has applied, and everything while a server
// lags or the point is not known in this term.
func TestTrimLog(t *testing.T) {
	first := func(r *Raft) Index { return r.Status().FirstIndex }

	// A follower trims to what the leader of its term said all hold.
	r := trimServer(t, 2, 20, 2, 1)
	r.allHold, r.allHoldTerm = 15, 3
	r.applyCommitted()
	if got := first(r); got != 14 {
		t.Fatalf("follower, all hold 15, keep 2: log starts at %d, want 14", got)
	}
	// ...never past what it has applied or made durable itself.
	r = trimServer(t, 2, 20, 2, 1)
	r.allHold, r.allHoldTerm = 20, 3
	r.commit = 12 // applies 1..12
	r.applyCommitted()
	if got := first(r); got != 11 {
		t.Fatalf("follower, applied 12, keep 2: log starts at %d, want 11", got)
	}
	r = trimServer(t, 2, 20, 2, 1)
	r.allHold, r.allHoldTerm = 20, 3
	r.st.durable = 9
	r.applyCommitted()
	if got := first(r); got != 8 {
		t.Fatalf("follower, durable 9, keep 2: log starts at %d, want 8", got)
	}
	// What a leader of an earlier term said no longer counts.
	r = trimServer(t, 2, 20, 2, 1)
	r.allHold, r.allHoldTerm = 15, 2
	r.applyCommitted()
	if got := first(r); got != 1 {
		t.Fatalf("follower, all hold 15 in an earlier term: log starts at %d, want 1", got)
	}
	// Switched off, nothing is trimmed.
	r = trimServer(t, 2, 20, -1, 1)
	r.allHold, r.allHoldTerm = 15, 3
	r.applyCommitted()
	if got := first(r); got != 1 {
		t.Fatalf("follower, LogKeep -1: log starts at %d, want 1", got)
	}

	// SnapshotKeep entries stay before the last snapshot; and, while a
	// server recovers (not once it takes part: a snapshot taken on demand
	// must find the entries after it), before what it has applied and holds
	// durably, whatever the servers hold. The latest point counts.
	for _, c := range []struct {
		what               string
		recovering         bool
		keep, chunk        int
		commit, durable    Index
		snapIndex, allHold Index
		want               Index
	}{
		{what: "running, applied 20", keep: -1, chunk: 1, want: 1},
		{what: "recovering, applied 20", recovering: true, keep: -1, chunk: 1, want: 17},
		{what: "recovering, applied 20, durable 14", recovering: true, keep: -1, chunk: 1, durable: 14, want: 11},
		{what: "recovering, 4-entry chunks, applied 7 (less than a chunk to trim)", recovering: true, keep: -1, chunk: 4, commit: 7, want: 1},
		{what: "recovering, 4-entry chunks, applied 11", recovering: true, keep: -1, chunk: 4, commit: 11, want: 8},
		{what: "snapshot at 12", keep: -1, chunk: 1, snapIndex: 12, want: 9},
		{what: "snapshot at 12, all hold 6", keep: 2, chunk: 1, snapIndex: 12, allHold: 6, want: 9},
		{what: "recovering, durable 10, snapshot at 12", recovering: true, keep: -1, chunk: 1, durable: 10, snapIndex: 12, want: 9},
	} {
		r := trimServer(t, 2, 20, c.keep, c.chunk)
		r.cfg.SnapshotKeep = 4
		r.st.open = !c.recovering
		if c.commit != 0 {
			r.commit = c.commit
		}
		if c.durable != 0 {
			r.st.durable = c.durable
		}
		r.log.snapIndex = c.snapIndex
		r.allHold, r.allHoldTerm = c.allHold, 3
		r.applyCommitted()
		if got := first(r); got != c.want {
			t.Errorf("%s, SnapshotKeep 4, LogKeep %d: log starts at %d, want %d", c.what, c.keep, got, c.want)
		}
	}

	// A leader trims to what its slowest follower holds, and says so.
	r = trimServer(t, 1, 20, 2, 1)
	r.peers[0].match, r.peers[1].match = 18, 6
	r.applyCommitted()
	if got := first(r); got != 5 {
		t.Fatalf("leader, followers at 18 and 6, keep 2: log starts at %d, want 5", got)
	}
	if got := r.heldByAll(); got != 6 {
		t.Fatalf("leader, followers at 18 and 6: tells followers all hold %d, want 6", got)
	}
	// A follower it has not heard from in this term holds everything.
	r = trimServer(t, 1, 20, 2, 1)
	r.peers[0].match = 18
	r.applyCommitted()
	if got := first(r); got != 1 {
		t.Fatalf("leader, one follower unheard: log starts at %d, want 1", got)
	}
	// Entries come off a chunk at a time.
	r4 := trimServer(t, 2, 20, 2, 4)
	r4.allHold, r4.allHoldTerm = 5, 3 // trim point 3: less than a chunk
	r4.applyCommitted()
	if got := first(r4); got != 1 {
		t.Fatalf("4-entry chunks, trim point 3: log starts at %d, want 1", got)
	}
	r4.allHold = 6 // trim point 4: a chunk's worth
	r4.applyCommitted()
	if got := first(r4); got != 5 {
		t.Fatalf("4-entry chunks, trim point 4: log starts at %d, want 5", got)
	}
}
