package sim

import "herd/node/raft"

// raftGate bounds disk damage for scenarios built on package raft: corrupt
// (or wipe) a server only while every server, itself included, is clean —
// no misdirected write armed, every corruption of its disk seen by a
// recovery that finished, and not abstaining. A replicated log survives the
// loss of a minority's copies, not of all of them at once; TigerBeetle's
// fault atlas bounds its simulator the same way.
type raftGate struct {
	servers []*Node
	raftOf  func(i int) *raft.Raft // nil while the server is down
	seen    []int                  // corruptions a finished recovery had seen
	abstain []bool                 // what that recovery left
	wiped   []bool                 // disk replaced: restart with Rejoin
	inc     []uint64
}

func newRaftGate(servers []*Node, raftOf func(i int) *raft.Raft) *raftGate {
	n := len(servers)
	return &raftGate{servers: servers, raftOf: raftOf, seen: make([]int, n), abstain: make([]bool, n), wiped: make([]bool, n), inc: make([]uint64, n)}
}

// observe records what every running, recovered server has seen.
func (g *raftGate) observe() {
	for i, n := range g.servers {
		r := g.raftOf(i)
		if r == nil {
			continue
		}
		st := r.Status()
		if !st.Ready {
			continue
		}
		g.seen[i] = n.BootCorruptions()
		g.abstain[i] = st.Abstain
		if g.wiped[i] && g.inc[i] != n.Incarnation() && !st.Abstain {
			// Repaired. Until then every restart gets Rejoin, as an
			// operator keeps --rejoin until the server reports it caught
			// up (ignored once its directory is not empty): a crash before
			// the abstention it recorded at its first boot was durable
			// left the disk empty, and a restart without Rejoin came back
			// as a fresh server that voted, after which a second server
			// could be wiped (keeper seed 119001591).
			g.wiped[i] = false
		}
	}
}

// MayCorrupt implements CorruptionGate.
func (g *raftGate) MayCorrupt(*Node) bool {
	g.observe()
	for i, n := range g.servers {
		if n.FS.MisdirectPending() || len(n.FS.Corruptions()) > g.seen[i] || g.wiped[i] || g.abstain[i] {
			return false
		}
	}
	return true
}

// Wiped implements WipeAware.
func (g *raftGate) Wiped(n *Node) {
	for i, o := range g.servers {
		if o == n {
			g.wiped[i] = true
			g.inc[i] = n.Incarnation()
		}
	}
}

// rejoin reports whether server i should start with Rejoin (never at first
// boot, before the gate exists).
func (g *raftGate) rejoin(i int) bool { return g != nil && g.wiped[i] }
