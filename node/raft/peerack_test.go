package raft

import (
	"testing"

	"herd/node"
)

// stubEnv is the part of node.Env that committing and applying touch; any
// other call panics on the nil interface, so a test notices.
type stubEnv struct{ node.Env }

type countingSource struct{ n uint64 }

func (s *countingSource) Uint64() uint64 { s.n++; return s.n * 0x9e3779b97f4a7c15 }

func (stubEnv) Rand() *node.Rand { return node.NewRand(&countingSource{}) }

type applyRecorder struct{ applied []Index }

func (a *applyRecorder) Apply(e *Entry)                             { a.applied = append(a.applied, e.Index) }
func (a *applyRecorder) Snapshot() []byte                           { return nil }
func (a *applyRecorder) Restore(data []byte, i Index, z Zxid) error { return nil }

// follower builds server 2 of n, following leader 1 in term 3, with the
// given entry terms in its log, all of them the leader's.
func follower(t *testing.T, n int, terms ...Term) (*Raft, *applyRecorder) {
	t.Helper()
	var peers []Peer
	for i := 1; i <= n; i++ {
		peers = append(peers, Peer{ID: ID(i), Addr: "x"})
	}
	sm := &applyRecorder{}
	r := New(stubEnv{}, Config{ID: 2, Peers: peers}, sm, Hooks{})
	r.term, r.role, r.leader = 3, Follower, 1
	r.log.reset(0, 0, 0)
	for i, term := range terms {
		r.log.append(Entry{Index: Index(i + 1), Term: term, Zxid: MakeZxid(term, uint32(i+1)), Type: EntryNormal})
	}
	r.leaderMatch, r.leaderMatchTerm = r.log.lastIndex(), 3
	return r, sm
}

func peerAck(r *Raft, from ID, term Term, match Index) {
	r.step(&message{typ: mPeerAck, from: from, term: term, match: match})
}

func TestPeerAckCommit(t *testing.T) {
	r, sm := follower(t, 3, 2, 3, 3, 3, 3)
	r.st.durable = 3
	peerAck(r, 3, 3, 5)
	if r.commit != 3 || len(sm.applied) != 3 {
		t.Fatalf("own durable 3, peer 5: commit %d, applied %v; want 3", r.commit, sm.applied)
	}
	r.st.durable = 5
	r.peerAcked()
	if r.commit != 5 {
		t.Fatalf("own durable 5, peer 5: commit %d, want 5", r.commit)
	}
	if r.peerCommits != 2 {
		t.Fatalf("%d peer commits counted, want 2", r.peerCommits)
	}

	// Only what we know matches the leader's log counts, however durable.
	r, _ = follower(t, 3, 3, 3, 3, 3, 3)
	r.st.durable, r.leaderMatch = 5, 2
	peerAck(r, 3, 3, 5)
	if r.commit != 2 {
		t.Fatalf("leader's log known to index 2: commit %d, want 2", r.commit)
	}

	// An entry of an earlier term commits only with one of ours after it.
	r, _ = follower(t, 3, 2, 2, 2, 3)
	r.st.durable = 4
	peerAck(r, 3, 3, 3)
	if r.commit != 0 {
		t.Fatalf("majority holds only term-2 entries: commit %d, want 0", r.commit)
	}
	peerAck(r, 3, 3, 4)
	if r.commit != 4 {
		t.Fatalf("majority holds the term-3 entry 4: commit %d, want 4", r.commit)
	}

	// Acknowledgements of an earlier term, or from the leader, do not count.
	r, _ = follower(t, 3, 3, 3, 3)
	r.st.durable = 3
	peerAck(r, 3, 2, 3)
	peerAck(r, 1, 3, 3)
	if r.commit != 0 {
		t.Fatalf("stale or leader's acknowledgement counted: commit %d", r.commit)
	}

	// Five servers: three followers must hold an entry.
	r, _ = follower(t, 5, 3, 3, 3, 3)
	r.st.durable = 4
	peerAck(r, 3, 3, 4)
	if r.commit != 0 {
		t.Fatalf("two of five hold it: commit %d, want 0", r.commit)
	}
	peerAck(r, 4, 3, 2)
	if r.commit != 2 {
		t.Fatalf("three of five hold 2: commit %d, want 2", r.commit)
	}

	// Switched off, nothing commits this way.
	r, _ = follower(t, 3, 3, 3, 3)
	r.cfg.NoPeerAcks = true
	r.st.durable = 3
	peerAck(r, 3, 3, 3)
	if r.commit != 0 {
		t.Fatalf("NoPeerAcks: commit %d, want 0", r.commit)
	}
}

// A leader's read floor covers what its followers may have committed among
// themselves: entries it has sent to a quorum of followers.
func TestReadFloor(t *testing.T) {
	for _, c := range []struct {
		sent   []Index // per follower
		commit Index
		want   Index
	}{
		{[]Index{5, 9}, 3, 5},
		{[]Index{5, 9}, 7, 7},
		{[]Index{0, 9}, 3, 3},
		{[]Index{4, 7, 9, 2}, 1, 4}, // five servers: a quorum is three followers
		{[]Index{9}, 2, 2},          // two servers: the follower cannot commit alone
	} {
		var peers []Peer
		for i := 1; i <= len(c.sent)+1; i++ {
			peers = append(peers, Peer{ID: ID(i), Addr: "x"})
		}
		r := New(stubEnv{}, Config{ID: 1, Peers: peers}, &applyRecorder{}, Hooks{})
		r.commit = c.commit
		for i, p := range r.peers {
			p.sentMax = c.sent[i]
		}
		if got := r.readFloor(); got != c.want {
			t.Errorf("sent %v, commit %d: read floor %d, want %d", c.sent, c.commit, got, c.want)
		}
	}
}
