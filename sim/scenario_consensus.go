package sim

import (
	"fmt"
	"time"

	"github.com/cespare/xxhash/v2"

	"herd/node"
	"herd/node/raft"
	"herd/node/replog"
)

// The consensus scenario runs the keeper's replicated log (package raft,
// through the replog service) on 3 or 5 servers, with clients proposing and
// reading on every server, under every fault: crashes that lose unsynced
// data and tear the WAL tail, corruption and misdirected writes on a
// minority, partitions, pauses, clock drift and jumps, disk errors.

var consensusBugs = map[string]string{
	raft.BugCommitOnMinority: "the leader commits an entry once any one server has it: a committed entry can be lost",
	raft.BugAckBeforeDurable: "followers acknowledge appends and grant votes before their WAL batch is on disk",
	raft.BugNoTruncate:       "a follower keeps the entries it holds at the leader's indexes without comparing terms, and acknowledges them",
	raft.BugPeerAckLeader:    "a follower committing from its fellow followers' acknowledgements counts the leader as holding durably what it sent",
	raft.BugNoDemandSnapshot: "a leader whose in-memory log no longer holds what a follower needs waits for the next periodic snapshot: the follower may never catch up",
	bugWipedVotes:            "a server whose disk was replaced is restarted without Rejoin and votes with an empty log",
}

const bugWipedVotes = "wiped-votes"

func init() {
	Register(&Scenario{
		Name:    "consensus",
		Doc:     "Raft on 3 or 5 servers (the seed decides), clients proposing and reading everywhere, every fault including WAL corruption on a minority",
		Profile: AllFaults,
		Bugs:    consensusBugs,
		Build:   buildConsensus,
	})
}

// entryDigest is what the checker remembers of a committed entry.
type entryDigest struct {
	term    raft.Term
	zxid    raft.Zxid
	typ     raft.EntryType
	data    uint64 // xxhash of the entry's data
	payload uint64 // xxhash of the client payload
	chain   uint64 // the state machine's hash after applying it
}

type consensusChecks struct {
	w       *World
	servers []*Node
	clients []*Node
	ids     []raft.ID

	committed []entryDigest // committed[i-1]: first application of index i anywhere
	// commitTerm[i-1]: the term of the leader that first committed index i.
	// A leader of term T must hold every entry committed in a term before T
	// (leader completeness); it need not hold entries a later term
	// committed (a candidate can win a stale term with votes cast earlier).
	commitTerm []raft.Term
	leaders    map[raft.Term]raft.ID
	lastApply  []applyPos // per server: last applied position this incarnation
	maxAcked   raft.Index
	readFloor  map[string]raft.Index // client/read id -> maxAcked when the read began
	acks       int

	gate *raftGate
}

type applyPos struct {
	incarnation uint64
	index       raft.Index
	zxid        raft.Zxid
}

func buildConsensus(w *World) Checks {
	r := stream(w.Seed, "consensus", 0)
	nServers := 3
	if r.Chance(0.4) {
		nServers = 5
	}
	cc := &consensusChecks{w: w, leaders: map[raft.Term]raft.ID{}, readFloor: map[string]raft.Index{}}
	var peers []raft.Peer
	var clientAddrs []string
	for i := range nServers {
		peers = append(peers, raft.Peer{ID: raft.ID(i + 1), Addr: fmt.Sprintf("s%d:2888", i+1)})
		clientAddrs = append(clientAddrs, fmt.Sprintf("s%d:2181", i+1))
	}
	cc.lastApply = make([]applyPos, nServers)
	walFill := drawWALFill(w.Seed)
	// Half the runs restore and install snapshots a piece at a time, as the
	// keeper does (raft.IncrementalRestore); a quarter of those send them
	// in pieces that end inside the file's header.
	streamed, snapChunk := stream(w.Seed, "streamed-restore", 0).IntN(2) == 0, 16<<10
	if streamed && stream(w.Seed, "streamed-chunk", 0).IntN(4) == 0 {
		snapChunk = 61
	}
	for i := range nServers {
		i := i
		name := fmt.Sprintf("s%d", i+1)
		id := raft.ID(i + 1)
		cc.ids = append(cc.ids, id)
		cfg := replog.ServerConfig{
			Raft: raft.Config{
				ID: id, Peers: peers, Tick: 50 * time.Millisecond, ElectionTicks: 10,
				SnapshotEvery: 150, SnapshotKeep: 40, SegmentBytes: 32 << 10, MaxAppendBytes: 16 << 10, SnapshotChunk: snapChunk,
				WALFill: walFill, LogChunk: drawLogChunk(w.Seed), LogKeep: drawLogKeep(w.Seed), SnapshotLogRatio: drawSnapshotLogRatio(w.Seed), TrimBytes: drawTrimBytes(w.Seed), NoAppendCoalescing: drawNoCoalescing(w.Seed), NoPeerAcks: drawNoPeerAcks(w.Seed), Bug: w.Bug,
				RestoreReadBytes: drawRestoreRead(w.Seed),
			},
			StreamedRestore: streamed,
			ClientAddr:      clientAddrs[i],
			OnApply:         func(e *raft.Entry, hash uint64) { cc.applied(i, e, hash) },
			OnRole:          func(role raft.Role, term raft.Term, leader raft.ID) { cc.roleChanged(i, role, term) },
			OnCommit: func(term raft.Term, index raft.Index) {
				for int(index) > len(cc.commitTerm) {
					cc.commitTerm = append(cc.commitTerm, term)
				}
			},
		}
		if w.tuneRaft != nil {
			w.tuneRaft(&cfg.Raft)
		}
		factory := func(env node.Env) node.Machine {
			c := cfg
			// An operator says so when replacing a disk (the planted bug
			// forgets to).
			c.Raft.Rejoin = cc.gate.rejoin(i) && w.Bug != bugWipedVotes
			return replog.NewServer(c)(env)
		}
		cc.servers = append(cc.servers, w.AddNode(NodeSpec{Name: name, Listen: []string{peers[i].Addr, clientAddrs[i]}, Factory: factory}))
	}
	cc.gate = newRaftGate(cc.servers, func(i int) *raft.Raft {
		if s := cc.server(i); s != nil {
			return s.Raft()
		}
		return nil
	})
	for i := range 3 {
		name := fmt.Sprintf("c%d", i+1)
		cfg := replog.ClientConfig{
			Name: name, Servers: clientAddrs, Proposals: 250, ReadEvery: 4, Window: 4,
			Interval: 20 * time.Millisecond, PayloadSize: 48,
			OnAck:       func(p []byte, resp replog.Response) { cc.acked(name, p, resp) },
			OnReadStart: func(id uint64) { cc.readFloor[fmt.Sprint(name, "/", id)] = cc.maxAcked },
			OnReadDone:  func(id uint64, resp replog.Response) { cc.readDone(name, id, resp) },
			OnViolation: func(msg string) { w.Fail(FailCorrectness, "client", "%s", msg) },
		}
		cc.clients = append(cc.clients, w.AddNode(NodeSpec{Name: name, Factory: replog.NewClient(cfg), Client: true}))
	}
	return cc
}

func (cc *consensusChecks) server(i int) *replog.Server {
	s, _ := cc.servers[i].Machine().(*replog.Server)
	return s
}

func (cc *consensusChecks) fail(check, format string, args ...any) {
	cc.w.Fail(FailCorrectness, check, format, args...)
}

// applied checks state-machine safety and zxid order on every application.
func (cc *consensusChecks) applied(i int, e *raft.Entry, hash uint64) {
	n := cc.servers[i]
	d := entryDigest{term: e.Term, zxid: e.Zxid, typ: e.Type, data: xxhash.Sum64(e.Data), payload: xxhash.Sum64(replog.Payload(e)), chain: hash}
	if e.Zxid.Epoch() != e.Term {
		cc.fail("zxid", "%s applied entry %d of term %d with zxid %v: the epoch must be the term", n.Name, e.Index, e.Term, e.Zxid)
		return
	}
	pos := &cc.lastApply[i]
	if pos.incarnation == n.Incarnation() && pos.index+1 == e.Index && e.Zxid <= pos.zxid {
		cc.fail("zxid", "%s applied zxid %v at %d after %v at %d", n.Name, e.Zxid, e.Index, pos.zxid, pos.index)
		return
	}
	*pos = applyPos{incarnation: n.Incarnation(), index: e.Index, zxid: e.Zxid}
	switch {
	case int(e.Index) <= len(cc.committed):
		if want := cc.committed[e.Index-1]; want != d {
			cc.fail("state-machine-safety", "%s applied %v at index %d (term %d, chain %x) but %v (term %d, chain %x) was applied there before: a committed entry was lost or replaced",
				n.Name, e.Zxid, e.Index, e.Term, hash, want.zxid, want.term, want.chain)
		}
	case int(e.Index) == len(cc.committed)+1:
		cc.committed = append(cc.committed, d)
	default:
		cc.fail("state-machine-safety", "%s applied index %d but only %d entries were ever committed", n.Name, e.Index, len(cc.committed))
	}
}

// roleChanged checks election safety and, for a new leader, leader
// completeness and log matching against every other running server.
func (cc *consensusChecks) roleChanged(i int, role raft.Role, term raft.Term) {
	if role != raft.Leader {
		return
	}
	id := cc.ids[i]
	if prev, ok := cc.leaders[term]; ok && prev != id {
		cc.fail("election-safety", "two leaders in term %d: servers %d and %d", term, prev, id)
		return
	}
	cc.leaders[term] = id
	s := cc.server(i)
	if s == nil {
		return
	}
	rf := s.Raft()
	st := rf.Status()
	must := 0 // entries committed in terms before this one
	for must < len(cc.commitTerm) && cc.commitTerm[must] < term {
		must++
	}
	must = min(must, len(cc.committed))
	if int(st.LastIndex) < must {
		cc.fail("leader-completeness", "server %d leads term %d with log ending at %d, but entries up to %d were committed in earlier terms", id, term, st.LastIndex, must)
		return
	}
	for idx := st.FirstIndex; int(idx) <= must; idx++ {
		e := rf.Entries(idx, idx)[0]
		want := cc.committed[idx-1]
		if e.Term != want.term || e.Zxid != want.zxid || xxhash.Sum64(e.Data) != want.data {
			cc.fail("leader-completeness", "server %d leads term %d but its entry %d (%v, term %d) is not the committed one (%v, term %d)",
				id, term, idx, e.Zxid, e.Term, want.zxid, want.term)
			return
		}
	}
	for j := range cc.servers {
		if j == i {
			continue
		}
		if o := cc.server(j); o != nil && o.Raft().Status().Ready {
			if err := logMatching(rf, o.Raft()); err != nil {
				cc.fail("log-matching", "when %d became leader of term %d: %v", id, term, err)
				return
			}
		}
	}
}

// logMatching checks Raft's log matching property between two servers: if
// their logs hold an entry with the same index and term, all entries up to
// it are identical. It compares from the highest common index whose terms
// agree downwards over the range both still hold.
func logMatching(a, b *raft.Raft) error {
	sa, sb := a.Status(), b.Status()
	lo := max(sa.FirstIndex, sb.FirstIndex)
	hi := min(sa.LastIndex, sb.LastIndex)
	top := raft.Index(0)
	for idx := hi; idx >= lo && idx > 0; idx-- {
		if a.Entries(idx, idx)[0].Term == b.Entries(idx, idx)[0].Term {
			top = idx
			break
		}
	}
	for idx := lo; idx <= top && idx > 0; idx++ {
		ea, eb := a.Entries(idx, idx)[0], b.Entries(idx, idx)[0]
		if ea.Term != eb.Term || ea.Zxid != eb.Zxid || ea.Type != eb.Type || xxhash.Sum64(ea.Data) != xxhash.Sum64(eb.Data) {
			return fmt.Errorf("servers %d and %d agree on the term of entry %d but differ at %d (%v/%d vs %v/%d)",
				sa.ID, sb.ID, top, idx, ea.Zxid, ea.Term, eb.Zxid, eb.Term)
		}
	}
	return nil
}

func (cc *consensusChecks) acked(client string, payload []byte, r replog.Response) {
	cc.acks++
	if int(r.Index) > len(cc.committed) || r.Index == 0 {
		cc.fail("acknowledged", "%s: proposal acknowledged at index %d, which was never applied anywhere", client, r.Index)
		return
	}
	d := cc.committed[r.Index-1]
	if d.payload != xxhash.Sum64(payload) || d.zxid != r.Zxid || d.chain != r.Hash {
		cc.fail("acknowledged", "%s: proposal %.30q acknowledged at index %d (zxid %v) but the committed entry there is another (zxid %v)",
			client, payload, r.Index, r.Zxid, d.zxid)
		return
	}
	cc.maxAcked = max(cc.maxAcked, r.Index)
}

// readDone checks linearizability of reads: a read returns a committed
// prefix (index and chain hash agree with the committed log) that includes
// every proposal acknowledged before the read began.
func (cc *consensusChecks) readDone(client string, id uint64, r replog.Response) {
	key := fmt.Sprint(client, "/", id)
	floor := cc.readFloor[key]
	delete(cc.readFloor, key)
	if r.Index < floor {
		cc.fail("linearizable-read", "%s: read returned index %d, but index %d was acknowledged before the read began: a stale read", client, r.Index, floor)
		return
	}
	if r.Index > 0 && (int(r.Index) > len(cc.committed) || cc.committed[r.Index-1].chain != r.Hash) {
		cc.fail("linearizable-read", "%s: read returned index %d with chain hash %x, which is not the committed state there", client, r.Index, r.Hash)
	}
}

// MayCorrupt and Wiped: see raftGate.
func (cc *consensusChecks) MayCorrupt(n *Node) bool { return cc.gate.MayCorrupt(n) }
func (cc *consensusChecks) Wiped(n *Node)           { cc.gate.Wiped(n) }

// Converged: one leader, everyone recovered, voting, and caught up to the
// leader's log, and every client done.
func (cc *consensusChecks) Converged() (bool, string) {
	for _, c := range cc.clients {
		cl, _ := c.Machine().(*replog.Client)
		if cl == nil || !cl.Done() {
			acked := 0
			if cl != nil {
				acked = cl.Acked()
			}
			return false, fmt.Sprintf("client %s has %d proposals acknowledged", c.Name, acked)
		}
	}
	var lead *raft.Status
	for i, n := range cc.servers {
		s := cc.server(i)
		if s == nil {
			return false, fmt.Sprintf("%s is down (last halt %q)", n.Name, n.LastHalt())
		}
		st := s.Raft().Status()
		switch {
		case !st.Ready:
			return false, n.Name + " is recovering"
		case st.Abstain:
			return false, fmt.Sprintf("%s is still abstaining (not repaired): term %d (unknown: %v), last %d, commit %d", n.Name, st.Term, st.TermUnknown, st.LastIndex, st.Commit)
		case st.Role == raft.Leader:
			if lead != nil {
				return false, "two servers think they lead"
			}
			lead = &st
		}
	}
	if lead == nil {
		return false, "no leader"
	}
	for i, n := range cc.servers {
		st := cc.server(i).Raft().Status()
		if st.Term != lead.Term || st.Applied != lead.LastIndex || st.LastIndex != lead.LastIndex {
			return false, fmt.Sprintf("%s is at term %d, applied %d, last %d; the leader at term %d, last %d, progress %+v",
				n.Name, st.Term, st.Applied, st.LastIndex, lead.Term, lead.LastIndex, lead.Progress)
		}
	}
	return true, ""
}

// Final: every pair of logs matches, and every server applied the same
// prefix.
func (cc *consensusChecks) Final() error {
	for i := range cc.servers {
		for j := i + 1; j < len(cc.servers); j++ {
			if err := logMatching(cc.server(i).Raft(), cc.server(j).Raft()); err != nil {
				return err
			}
		}
		ch := cc.server(i).Chain()
		if int(ch.Index) != len(cc.committed) || cc.committed[ch.Index-1].chain != ch.Hash {
			return fmt.Errorf("%s applied %d entries ending in hash %x; %d are committed", cc.servers[i].Name, ch.Index, ch.Hash, len(cc.committed))
		}
	}
	want := 0
	for _, c := range cc.clients {
		want += c.Machine().(*replog.Client).Acked()
	}
	if cc.acks != want || want == 0 {
		return fmt.Errorf("the checker saw %d acknowledgements, the clients %d", cc.acks, want)
	}
	return nil
}

// Counters, over the servers' current incarnations: "peer-commits", the
// commit advances followers learned from their fellow followers
// (raft.Status.PeerCommits), and "trimmed", the discarded files emptied in
// steps (raft.Status.Trimmed).
func (cc *consensusChecks) Counters() map[string]uint64 {
	var n, trimmed uint64
	for i := range cc.servers {
		if s := cc.server(i); s != nil {
			n += s.Raft().Status().PeerCommits
			trimmed += s.Raft().Status().Trimmed
		}
	}
	return map[string]uint64{"peer-commits": n, "trimmed": trimmed}
}

// drawWALFill picks how far ahead WAL segments are written with fill: not at
// all, or by a few sectors to a few segments' worth, so that batches land
// on both sides of fill boundaries and crashes tear fill as well as data.
// It has a stream of its own, so the scenarios' other draws stay what they
// were before fill existed.
func drawWALFill(seed uint64) int64 {
	return []int64{-1, 512, 4 << 10, 64 << 10}[stream(seed, "walfill", 0).IntN(4)]
}

// drawNoCoalescing turns off holding partly filled appends while another is
// in flight in one run out of four, so both ways of replicating are swept.
func drawNoCoalescing(seed uint64) bool {
	return stream(seed, "coalesce", 0).IntN(4) == 0
}

// drawLogChunk picks the entries per chunk of the in-memory log: tiny ones
// most of the time, so that appends, truncations and compactions cross chunk
// boundaries in every run (the default, 4096, is more than a run's log).
func drawLogChunk(seed uint64) int {
	return []int{1, 4, 32, 0}[stream(seed, "log-chunk", 0).IntN(4)]
}

// drawLogKeep picks how many entries the in-memory log keeps behind the
// point every server holds (raft.Config.LogKeep): few, so that a leader
// change or a server that lost part of its log needs a snapshot taken on
// demand, or none trimmed between snapshots (-1), as before that existed.
func drawLogKeep(seed uint64) int {
	return []int{-1, 1, 8, 64}[stream(seed, "log-keep", 0).IntN(4)]
}

// drawSnapshotLogRatio picks raft.Config.SnapshotLogRatio: off (0), or a
// snapshot waiting for half, once or four times its size in WAL since the
// last, so that the simulator's restarts replay long logs, applying and
// trimming as they go, and servers behind them need snapshots taken on
// demand.
func drawSnapshotLogRatio(seed uint64) float64 {
	return []float64{0, 0.5, 1, 4}[stream(seed, "snapshot-log-ratio", 0).IntN(4)]
}

// drawTrimBytes picks how much of a discarded file each trimming step frees:
// a sector to a few pages, so that the simulator's small snapshots and
// segments are emptied in many steps and crashes land between them.
func drawTrimBytes(seed uint64) int64 {
	return []int64{512, 4 << 10, 64 << 10}[stream(seed, "trim-bytes", 0).IntN(3)]
}

// drawRestoreRead picks how much of a snapshot file one read during
// recovery brings into a state machine that decodes it as it comes (the
// keeper's): odd sizes smaller than the simulator's snapshots, so that
// pieces end inside records of every kind, or the default (all at once).
func drawRestoreRead(seed uint64) int {
	return []int{61, 509, 4093, 0}[stream(seed, "restore-read", 0).IntN(4)]
}

// drawSnapshotChunk picks the bytes one install-snapshot message carries
// to a keeper follower: a piece that ends inside the file's 64-byte header,
// one of a kilobyte, or the default (a simulated snapshot in one message).
func drawSnapshotChunk(seed uint64) int {
	return []int{61, 1021, 0}[stream(seed, "snapshot-chunk", 0).IntN(3)]
}

// drawNoPeerAcks turns off followers' acknowledgements to each other (and
// so their commits from them) in one run out of four: both ways of learning
// commits are swept.
func drawNoPeerAcks(seed uint64) bool {
	return stream(seed, "peer-acks", 0).IntN(4) == 0
}
