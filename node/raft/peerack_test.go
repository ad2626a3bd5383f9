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

	// The other rules, each a fresh follower of leader 1 in term 3 and a
	// run of peer acknowledgements, with the commit expected after each.
	type ack struct {
		from       ID
		term       Term
		match      Index
		wantCommit Index
	}
	for _, tc := range []struct {
		name        string
		servers     int
		terms       []Term
		durable     Index
		leaderMatch Index // 0: the whole log is known to be the leader's
		noPeerAcks  bool
		acks        []ack
	}{
		{name: "only what is known to match the leader's log counts, however durable",
			servers: 3, terms: []Term{3, 3, 3, 3, 3}, durable: 5, leaderMatch: 2,
			acks: []ack{{3, 3, 5, 2}}},
		{name: "an entry of an earlier term commits only with one of ours after it",
			servers: 3, terms: []Term{2, 2, 2, 3}, durable: 4,
			acks: []ack{{3, 3, 3, 0}, {3, 3, 4, 4}}},
		{name: "acknowledgements of an earlier term, or from the leader, do not count",
			servers: 3, terms: []Term{3, 3, 3}, durable: 3,
			acks: []ack{{3, 2, 3, 0}, {1, 3, 3, 0}}},
		{name: "five servers: three followers must hold an entry",
			servers: 5, terms: []Term{3, 3, 3, 3}, durable: 4,
			acks: []ack{{3, 3, 4, 0}, {4, 3, 2, 2}}},
		{name: "switched off, nothing commits this way",
			servers: 3, terms: []Term{3, 3, 3}, durable: 3, noPeerAcks: true,
			acks: []ack{{3, 3, 3, 0}}},
	} {
		r, _ := follower(t, tc.servers, tc.terms...)
		r.st.durable = tc.durable
		if tc.leaderMatch != 0 {
			r.leaderMatch = tc.leaderMatch
		}
		r.cfg.NoPeerAcks = tc.noPeerAcks
		for i, a := range tc.acks {
			peerAck(r, a.from, a.term, a.match)
			if r.commit != a.wantCommit {
				t.Fatalf("%s: after acknowledgement %d (from %d, term %d, match %d): commit %d, want %d",
					tc.name, i+1, a.from, a.term, a.match, r.commit, a.wantCommit)
			}
		}
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
