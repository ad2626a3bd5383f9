package raft

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"

	"herd/node"
	"herd/node/frame"
)

// Config configures one server.
type Config struct {
	ID    ID
	Peers []Peer // every member, this server included; static membership
	// Dir is the directory (relative to the node's data directory) holding
	// the WAL and snapshots.
	Dir string
	// Tick is the heartbeat interval; timeouts are counted in ticks.
	Tick time.Duration
	// ElectionTicks: a follower that hears from no leader for a random
	// [ElectionTicks, 2*ElectionTicks) ticks starts a pre-vote.
	ElectionTicks int
	// SnapshotEvery: take a snapshot once this many entries were applied
	// since the last one. SnapshotKeep entries before it stay in memory for
	// followers that lag a little.
	SnapshotEvery uint64
	SnapshotKeep  uint64
	// SnapshotLogRatio: a snapshot also waits until the WAL written since
	// the last one is this many times that snapshot's size (0: SnapshotEvery
	// alone decides). Encoding a snapshot costs in proportion to the state,
	// so with SnapshotEvery alone a big state is encoded as often as a
	// small one: a keeper with a million znodes spent about a second of CPU
	// per server every 50-100 k writes. With the ratio the cost per write
	// stays bounded, and a restart replays at most about that much WAL
	// beside the snapshot (applying as it goes, so its memory stays
	// bounded too). While a server lags, the others hold every entry since
	// their last snapshot (trimLog), so once they hold SnapshotEvery +
	// SnapshotKeep the ratio no longer delays a snapshot.
	SnapshotLogRatio float64
	// SnapshotStep is the work an incremental state machine
	// (IncrementalSnapshots) does per event while encoding a snapshot
	// (the unit is the state machine's; the keeper counts znodes). Each
	// step holds the event loop: 1,000 znodes are about 0.4-0.5 ms. With
	// 20,000 a write's p99 under load was 115-138 ms against 65-80 with
	// 4,000 (set, 32 sessions x 16 outstanding, three runs each); 1,000
	// brought it to 59 from 72 (medians of four runs, ~300k znodes).
	SnapshotStep int
	// SnapshotSyncBytes: an incremental snapshot's file is synced each
	// time this much more of it has been written, so that no one sync
	// holds the WAL's fsyncs queued behind it for long (one sync of a
	// 20 MB image at the end did: writes' p99 at 16 outstanding went
	// from 45-88 to 41-58 ms with 2 MiB).
	SnapshotSyncBytes int
	// TrimBytes: files no longer needed (old snapshots and segments) are
	// emptied this many bytes per step before they are removed (0: the
	// trash's 4 MiB; see storage.discard and node/trash). The simulator
	// draws small ones, so that its small files are trimmed in several
	// steps too.
	TrimBytes int64
	// RestoreReadBytes: recovery reads a snapshot this many bytes at a time
	// into an IncrementalRestore state machine (0: 16 MiB, the most one
	// read may ask). The simulator draws small ones, so that its small
	// snapshots arrive in pieces that cut records anywhere.
	RestoreReadBytes int
	// SnapshotLoopShare bounds the share of the event loop's time an
	// incremental snapshot takes while it is encoded: after each step the
	// next waits (1/share - 1) times as long as the step took, so writes
	// queued behind the encoder get the loop in between. 0 means 0.5;
	// 1 (or more): no wait. With 0.5 (and 1,000-znode steps) a write's p99
	// under load went to 45-53 ms from 51-59 with no wait (DESIGN §11).
	// Time is the environment's, so in the simulator, where an event takes
	// no time, steps follow at once.
	SnapshotLoopShare float64
	// SegmentBytes: start a new WAL segment past this size.
	SegmentBytes int64
	// WALFill: write a segment this far ahead of its batches (a multiple
	// of 512; negative: never), so that most fdatasyncs change no file
	// size or allocation (see wal.go): an append-and-fdatasync on this
	// ext4 went from 335-345 to 205-250 us.
	WALFill int64
	// LogKeep is how many entries the in-memory log keeps behind the point
	// up to which every server holds the log durably and this one has
	// applied it (0: 4096). Entries behind that point are needed again only
	// by a server that lost part of its log, which a snapshot then brings up
	// to date (taken at once if none covers what it needs). Negative: the
	// log is trimmed only at snapshots (SnapshotKeep before each), as it
	// always is while some server lags.
	LogKeep int
	// LogChunk is how many entries one chunk of the in-memory log holds, a
	// power of two (0: 4096). The simulator draws small ones too, so that
	// its runs cross chunk boundaries often.
	LogChunk int
	// MaxAppendBytes bounds the entries in one append message;
	// MaxInflight the append messages in flight to one follower.
	MaxAppendBytes int
	MaxInflight    int
	// NoAppendCoalescing sends every flush's new entries at once instead
	// of holding a partly filled append while another is in flight.
	NoAppendCoalescing bool
	// NoPeerAcks: followers do not tell each other what they hold durably,
	// and learn commits only from the leader (see Raft.peerAcked).
	NoPeerAcks bool
	// MaxPending bounds proposals waiting for the disk; beyond it Propose
	// returns ErrBusy.
	MaxPending int
	// SnapshotChunk is the snapshot bytes one install message carries.
	SnapshotChunk int
	// Rejoin: this server's disk was wiped while the ensemble kept its data
	// (an operator's statement). It abstains from elections until a leader
	// has caught it up, as after detected corruption.
	Rejoin bool
	// Bug plants a bug for checker tests (BugVoteBeforeDurable, ...).
	Bug string
}

// Planted bugs, for tests that prove the simulator's checks catch them.
const (
	BugAckBeforeDurable = "ack-before-durable" // acknowledge appends and grant votes before the WAL batch is on disk
	BugCommitOnMinority = "commit-on-minority" // commit once any one server has an entry
	BugNoTruncate       = "no-truncate"        // followers keep entries at indexes they hold without comparing terms, and acknowledge them
	BugPeerAckLeader    = "peer-ack-leader"    // a follower committing from peer acknowledgements counts the leader as holding durably what it sent
	BugNoDemandSnapshot = "no-demand-snapshot" // a leader whose log no longer holds what a follower needs waits for the next periodic snapshot instead of taking one
)

func (c *Config) setDefaults() {
	if c.Dir == "" {
		c.Dir = "raft"
	}
	if c.Tick <= 0 {
		c.Tick = 50 * time.Millisecond
	}
	if c.ElectionTicks <= 0 {
		c.ElectionTicks = 10
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 10_000
	}
	if c.SnapshotKeep == 0 {
		c.SnapshotKeep = c.SnapshotEvery / 2
	}
	if c.SegmentBytes <= 0 {
		c.SegmentBytes = 64 << 20
	}
	if c.WALFill == 0 {
		c.WALFill = 1 << 20
	}
	if c.WALFill > 0 && c.WALFill%sectorSize != 0 {
		panic(fmt.Sprintf("raft: WALFill %d is not a multiple of %d", c.WALFill, sectorSize))
	}
	if c.LogKeep == 0 {
		c.LogKeep = 4096
	}
	if c.LogChunk <= 0 {
		c.LogChunk = defaultLogChunk
	}
	if c.LogChunk&(c.LogChunk-1) != 0 || c.LogChunk > 1<<20 {
		panic(fmt.Sprintf("raft: LogChunk %d is not a power of two up to 2^20", c.LogChunk))
	}
	if c.MaxAppendBytes <= 0 {
		c.MaxAppendBytes = 1 << 20
	}
	if c.MaxInflight <= 0 {
		c.MaxInflight = 64
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 100_000
	}
	if c.SnapshotChunk <= 0 {
		c.SnapshotChunk = 1 << 20
	}
	if c.SnapshotLoopShare <= 0 {
		c.SnapshotLoopShare = 0.5
	}
	if c.SnapshotStep <= 0 {
		c.SnapshotStep = 1_000
	}
	if c.SnapshotSyncBytes <= 0 {
		c.SnapshotSyncBytes = 2 << 20
	}
	if c.RestoreReadBytes <= 0 || c.RestoreReadBytes > maxReadBytes {
		c.RestoreReadBytes = maxReadBytes
	}
}

// StateMachine receives committed entries, in order, once each per
// incarnation (after a restart it is rebuilt from the snapshot and the log).
type StateMachine interface {
	// Apply applies a committed entry (no-ops included, so zxids are seen
	// contiguously).
	Apply(e *Entry)
	// Snapshot serialises the state as of the last applied entry.
	Snapshot() []byte
	// Restore replaces the state with a snapshot taken at index.
	Restore(data []byte, index Index, zxid Zxid) error
}

// IncrementalSnapshots is implemented by state machines too large to
// serialise within one event: Raft then encodes the snapshot a step at a
// time, one step per event, so the server keeps answering heartbeats,
// votes and reads meanwhile (a million-znode tree takes a second or two).
// Committed entries keep being applied: the encoder must describe the state
// as of BeginSnapshot however the state changes until the image is
// complete (the keeper keeps images of what changes: copy-on-write).
type IncrementalSnapshots interface {
	BeginSnapshot() SnapshotEncoder
}

// SnapshotEncoder produces one snapshot image a piece at a time. Raft
// writes each piece to the snapshot file as soon as it is taken, so the
// image never has to be held in memory whole (for a million-znode tree it
// is about half the tree's heap).
type SnapshotEncoder interface {
	// Next encodes about budget more units; done reports the image complete.
	Next(budget int) (done bool)
	// Abort ends an encoding that will not be completed (the state is
	// about to be replaced).
	Abort()
	// Take returns the bytes encoded since the previous Take. They belong
	// to raft from then on: the encoder must not touch them again. reuse,
	// if not nil, is an empty buffer raft is done with (a piece it has
	// written) that the encoder may encode the next piece into: a fresh
	// buffer for every piece of a large image was a page fault per 4 KiB,
	// and under a memory limit the runtime returned memory to the OS to
	// make room for each (a twentieth of a server's CPU in madvise).
	Take(reuse []byte) []byte
}

// IncrementalRestore is implemented by state machines whose snapshot image
// is too large to hold in memory whole beside the state it decodes to (a
// million znodes: a 200 MB image for a 230 MB tree). Recovery then reads the
// snapshot file a piece at a time (Config.RestoreReadBytes) and hands each
// piece to a SnapshotDecoder as it comes, checking the file's checksum on
// the way; the state is replaced only once the whole image has been read and
// found intact.
type IncrementalRestore interface {
	// BeginRestore starts decoding an image of size bytes.
	BeginRestore(size int64) SnapshotDecoder
}

// SnapshotDecoder decodes one snapshot image a piece at a time.
type SnapshotDecoder interface {
	// Write decodes the next bytes of the image; pieces may cut it
	// anywhere. The decoder must not keep p (raft reuses read buffers).
	// An error means the image is malformed; raft then feeds no more.
	Write(p []byte) error
	// Install replaces the state with the decoded image, a snapshot taken
	// at index (as Restore). It fails if the image was incomplete.
	Install(index Index, zxid Zxid) error
}

// Hooks tell the host what happened. Any may be nil.
type Hooks struct {
	// Ready: recovery finished; the server now takes part.
	Ready func()
	// ReadReady answers a ReadIndex: ok means every entry committed before
	// the read began has been applied.
	ReadReady func(ctx uint64, ok bool)
	// RoleChanged reports a new role, term or leader.
	RoleChanged func(role Role, term Term, leader ID)
	// Committed: this server advanced the commit index to index in term,
	// as its leader or as a follower from its fellow followers'
	// acknowledgements (checkers use it to know in which term an entry
	// committed).
	Committed func(term Term, index Index)
	// Prepare lets the leader's host rewrite a proposal's data just before
	// it is appended (the keeper stamps the leader's time into it, in
	// place: Propose and Forward take over the data they are given).
	Prepare func(data []byte) []byte
	// HostMessage delivers data a peer's host sent with SendHost.
	HostMessage func(from ID, data []byte)
}

var (
	// ErrNotLeader: proposals go to the leader (Leader() names it, if known).
	ErrNotLeader = errors.New("raft: not the leader")
	// ErrBusy: too many proposals are waiting for the disk.
	ErrBusy = errors.New("raft: too many pending proposals")
	// ErrRecovering: the server has not finished reading its disk.
	ErrRecovering = errors.New("raft: recovering")
)

const (
	timerTick node.TimerName = "raft/tick"
	// timerSnap paces an incremental snapshot: one step per firing.
	timerSnap node.TimerName = "raft/snapshot-step"
	// redialTicks: how long to wait before redialing a peer.
	redialTicks = 2
)

// Raft is one server of the ensemble.
type Raft struct {
	env    node.Env
	cfg    Config
	sm     StateMachine
	hooks  Hooks
	addr   string // our peer address
	quorum int

	ready  bool
	role   Role
	term   Term
	vote   ID
	leader ID
	// abstain: this server may have lost entries it acknowledged
	// (corruption found at recovery, or a wiped disk). Until a leader brings
	// it up to a commit point of the leader's own term it neither votes nor
	// stands, so no election can count on the log it lost: leader
	// completeness then holds as long as a majority of the others is intact.
	abstain bool
	// termUnknown: this server lost its hard state (a wiped disk, or both
	// copies damaged), so it may have promised a term it no longer knows:
	// it voted, or acknowledged a leader's entries, in a term above its
	// own. A deposed leader of a lower term that never heard of it could
	// then count this server's acknowledgements towards a commit that
	// contradicts one made in the forgotten term (consensus seed
	// 41001725). Until it has heard the terms of enough others that any
	// majority it was part of includes one of them (all but quorum-1 of
	// the others), it asks them (mTermQuery) and answers no leader.
	termUnknown bool
	termHeard   map[ID]bool

	log raftLog
	// appendBuf gathers an append's entries that span two of the log's
	// chunks (appendEntries); empty between sends.
	appendBuf []Entry
	commit    Index
	applied   Index

	// Follower commits from fellow followers' acknowledgements (peerAcked):
	// our log equals the leader's up to leaderMatch (in term
	// leaderMatchTerm), and we told the other followers so up to
	// peerAckSent (in term peerAckSentTerm).
	leaderMatch     Index
	leaderMatchTerm Term
	peerAckSent     Index
	peerAckSentTerm Term
	peerCommits     uint64 // commit advances learned that way
	// allHold is the point up to which, as the leader of allHoldTerm last
	// said, every server holds the log durably (see trimLog).
	allHold     Index
	allHoldTerm Term

	// elections
	electionElapsed  int
	electionTimeout  int // randomised
	heartbeatElapsed int
	votes            map[ID]bool

	// leader state
	peers     []*peer // everyone else, in configuration order
	zxidCount uint32  // counter of the last zxid handed out in this term

	// ReadIndex
	reads reads

	st      storage
	inbound map[node.ConnID]*frame.Reader
	out     []byte // scratch for encoding
}

// peer is another server: our connection to it and, when leading, its
// replication progress.
type peer struct {
	id       ID
	addr     string
	conn     node.ConnID
	redial   int // ticks until we may dial again
	next     Index
	match    Index
	inflight int // append messages sent and not answered
	// commitSent is the commit index the last message to it carried, so a
	// commit it already heard about with entries is not sent again.
	commitSent Index
	probing    bool
	active     bool   // heard from since the last check-quorum
	readSeq    uint64 // highest ReadIndex round it acknowledged
	snap       *snapSend
	// ackMatch: while we follow, the peer (a fellow follower) holds the
	// leader's log durably up to ackMatch in term ackTerm.
	ackMatch Index
	ackTerm  Term
	// sentMax: while we lead, the last entry of ours it has been sent, in
	// any append of this term (reads.go: readFloor).
	sentMax Index
}

// New creates a server. Call Start on the node's EvStart.
func New(env node.Env, cfg Config, sm StateMachine, hooks Hooks) *Raft {
	cfg.setDefaults()
	r := &Raft{
		env:     env,
		cfg:     cfg,
		sm:      sm,
		hooks:   hooks,
		quorum:  len(cfg.Peers)/2 + 1,
		inbound: make(map[node.ConnID]*frame.Reader),
	}
	found := false
	for _, p := range cfg.Peers {
		if p.ID == cfg.ID {
			r.addr = p.Addr
			found = true
			continue
		}
		r.peers = append(r.peers, &peer{id: p.ID, addr: p.Addr})
	}
	if !found || cfg.ID == 0 {
		panic(fmt.Sprintf("raft: server %d is not in its own peer list", cfg.ID))
	}
	r.log.shift = uint8(bits.TrailingZeros(uint(cfg.LogChunk)))
	r.st.init(r)
	r.reads.init(r)
	return r
}

// Start begins recovery.
func (r *Raft) Start() { r.st.recover() }

// Handle takes an event that may belong to this server and reports whether
// it did.
func (r *Raft) Handle(ev node.Event) bool {
	handled := true
	switch ev.Kind {
	case node.EvAccepted:
		if ev.Local != r.addr {
			return false
		}
		r.inbound[ev.Conn] = frame.NewReader(maxMessage)
	case node.EvConnected:
		handled = r.peerByConn(ev.Conn) != nil
	case node.EvReceived:
		in, ok := r.inbound[ev.Conn]
		if !ok {
			return r.peerByConn(ev.Conn) != nil // nothing is expected on our own dialed connections
		}
		r.received(ev.Conn, in, ev.Data)
	case node.EvClosed:
		if _, ok := r.inbound[ev.Conn]; ok {
			delete(r.inbound, ev.Conn)
		} else if p := r.peerByConn(ev.Conn); p != nil {
			p.conn = 0
			p.redial = redialTicks
		} else {
			handled = false
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerTick:
			r.tick()
			r.env.SetTimer(timerTick, r.cfg.Tick)
		case timerSnap:
			r.st.encodeStep()
		case timerTrim:
			r.st.trash.Timer()
		default:
			return false
		}
	case node.EvDiskDone:
		handled = r.st.diskDone(ev)
	default:
		return false
	}
	if handled {
		r.Flush()
	}
	return handled
}

// Flush sends what Propose, Forward and ReadIndex queued and submits the
// WAL batch. Hosts call it once at the end of a Step in which they called
// those, so a burst of proposals becomes one append per follower and one
// fsync (Handle flushes by itself).
func (r *Raft) Flush() {
	if r.role == Leader && r.ready {
		r.broadcastAppend()
		// Followers apply (and answer their clients) only once they learn
		// the commit: tell those the appends above did not tell now rather
		// than at the next tick.
		for _, p := range r.peers {
			if p.commitSent < r.commit && p.snap == nil && !p.probing {
				r.sendAppend(p, true)
			}
		}
	}
	r.st.flush()
}

func (r *Raft) peerByConn(c node.ConnID) *peer {
	if c == 0 {
		return nil
	}
	for _, p := range r.peers {
		if p.conn == c {
			return p
		}
	}
	return nil
}

func (r *Raft) peerByID(id ID) *peer {
	for _, p := range r.peers {
		if p.id == id {
			return p
		}
	}
	return nil
}

// ---- public state ----

// Status is a snapshot of a server's state, for hosts, tools and checkers.
type Status struct {
	ID              ID
	Ready           bool
	Role            Role
	Term            Term
	Vote            ID
	Leader          ID
	Abstain         bool // abstaining, or its end not yet durable
	TermUnknown     bool // lost its term; answers no leader yet (see Raft.termUnknown)
	Commit, Applied Index
	FirstIndex      Index // first entry held in memory
	LastIndex       Index
	LastTerm        Term
	LastZxid        Zxid
	SnapIndex       Index
	Durable         Index
	// Batches counts WAL batches made durable (one fsync each) and
	// BatchedEntries the entries they carried: group commit at work.
	Batches, BatchedEntries uint64
	// PeerCommits counts the times this server, following, advanced its
	// commit index from its fellow followers' acknowledgements before the
	// leader told it.
	PeerCommits uint64
	// Trimmed counts files this server emptied step by step (more than
	// one step) and removed (storage.discard, node/trash).
	Trimmed uint64
	// RemoteReads counts the followers' read-index requests (their clients'
	// syncs) this server holds as leader, not yet answered.
	RemoteReads int
	// Progress is the leader's view of each follower.
	Progress []Progress
}

// Progress is a leader's replication state for one follower.
type Progress struct {
	ID          ID
	Match, Next Index
	Inflight    int
	Probing     bool
	Snapshot    bool // an install-snapshot is in progress
	Connected   bool
}

// Status reports the server's state.
func (r *Raft) Status() Status {
	return Status{
		ID: r.cfg.ID, Ready: r.ready, Role: r.role, Term: r.term, Vote: r.vote, Leader: r.leader,
		Abstain: r.st.abstainDurable(), TermUnknown: r.termUnknown, Commit: r.commit, Applied: r.applied,
		FirstIndex: r.log.first, LastIndex: r.log.lastIndex(), LastTerm: r.log.lastTerm(),
		LastZxid: r.log.lastZxid(), SnapIndex: r.log.snapIndex, Durable: r.st.durable,
		Progress: r.progress(),
		Batches:  r.st.batchesSynced, BatchedEntries: r.st.entriesSynced, PeerCommits: r.peerCommits, Trimmed: r.st.trash.Stats().Emptied,
		RemoteReads: r.reads.remoteHeld(),
	}
}

func (r *Raft) progress() []Progress {
	if r.role != Leader {
		return nil
	}
	out := make([]Progress, len(r.peers))
	for i, p := range r.peers {
		out[i] = Progress{ID: p.id, Match: p.match, Next: p.next, Inflight: p.inflight, Probing: p.probing, Snapshot: p.snap != nil, Connected: p.conn != 0}
	}
	return out
}

// Entries returns a copy of the in-memory log entries in [lo, hi] (clamped
// to what is held). Their data is shared: callers must not modify it.
func (r *Raft) Entries(lo, hi Index) []Entry {
	var out []Entry
	for run := r.log.slice(lo, hi); len(run) > 0; run = r.log.slice(lo, hi) {
		out = append(out, run...)
		lo += Index(len(run))
	}
	return out
}

// Leader returns the current leader's ID and address, if known.
func (r *Raft) Leader() (ID, string) {
	if r.leader == r.cfg.ID {
		return r.leader, r.addr
	}
	if p := r.peerByID(r.leader); p != nil {
		return p.id, p.addr
	}
	return 0, ""
}

// ---- proposals ----

// Propose appends data to the log if this server leads, returning the
// entry's index and zxid. The entry may still be lost (the leader may fail
// before it commits); the host learns it committed when it is applied.
// data becomes raft's (Hooks.Prepare may rewrite it in place).
func (r *Raft) Propose(data []byte) (Index, Zxid, error) {
	switch {
	case !r.ready:
		return 0, 0, ErrRecovering
	case r.role != Leader:
		return 0, 0, ErrNotLeader
	case r.st.pendingEntries >= r.cfg.MaxPending:
		return 0, 0, ErrBusy
	}
	e := r.appendLeaderEntry(EntryNormal, data)
	return e.Index, e.Zxid, nil
}

// Forward proposes data at the leader, wherever it is: locally if this
// server leads, otherwise by sending it to the leader. Nothing reports a
// forwarded proposal's fate except its appearance in the applied log.
func (r *Raft) Forward(data []byte) error {
	if r.role == Leader || !r.ready {
		_, _, err := r.Propose(data)
		return err
	}
	if r.leader == 0 {
		return ErrNotLeader
	}
	// A proposal carries no vote, term or acknowledgement of this server:
	// it need not wait for this server's disk.
	r.sendNow(r.leader, &message{typ: mProp, data: data})
	return nil
}

// SendHost sends data to a peer's host, outside the log: no ordering with
// entries, no durability, dropped when there is no connection. The keeper
// uses it for session liveness (touches) that the leader must hear about.
func (r *Raft) SendHost(to ID, data []byte) {
	if to != r.cfg.ID {
		r.sendNow(to, &message{typ: mHost, data: data})
	}
}

// ID returns this server's id.
func (r *Raft) ID() ID { return r.cfg.ID }

// Peers returns the members, this server included.
func (r *Raft) Peers() []Peer { return r.cfg.Peers }

// appendLeaderEntry appends an entry of the current term, with the next
// zxid, to the leader's log and the WAL.
func (r *Raft) appendLeaderEntry(t EntryType, data []byte) *Entry {
	r.zxidCount++
	if t == EntryNormal && r.hooks.Prepare != nil {
		data = r.hooks.Prepare(data)
	}
	e := Entry{Index: r.log.lastIndex() + 1, Term: r.term, Zxid: MakeZxid(r.term, r.zxidCount), Type: t, Data: data}
	r.log.append(e)
	r.st.appendEntries(r.log.slice(e.Index, e.Index))
	if r.zxidCount == 1<<32-1 {
		// The zxid counter is exhausted: a new term starts a new epoch, as
		// ZooKeeper's leader does when its counter rolls over.
		r.env.Logf("raft: zxid counter exhausted in term %d; stepping down", r.term)
		r.becomeFollower(r.term, 0)
	}
	return r.log.at(e.Index)
}

// ---- message intake ----

func (r *Raft) received(c node.ConnID, in *frame.Reader, data []byte) {
	in.Feed(data)
	for {
		body, ok, err := in.Next()
		if err != nil {
			r.env.Logf("raft: closing peer connection %d: %v", c, err)
			r.env.Close(c)
			delete(r.inbound, c)
			return
		}
		if !ok {
			return
		}
		m, err := decodeMessage(body)
		if err != nil || m.from == r.cfg.ID || r.peerByID(m.from) == nil {
			r.env.Logf("raft: closing peer connection %d: bad message from %d: %v", c, m.from, err)
			r.env.Close(c)
			delete(r.inbound, c)
			return
		}
		if r.ready {
			r.step(&m)
		}
	}
}

// step handles one peer message: first the term rules every message obeys,
// then the role's own step function.
func (r *Raft) step(m *message) {
	switch m.typ {
	case mTermQuery:
		// Answered whatever the asker's term: it does not know its own.
		// Nor does it count as a sign of life for check-quorum: it cannot
		// help a leader commit.
		r.sendNow(m.from, &message{typ: mTermResp})
		return
	case mTermResp:
		r.termLearned(m)
		return
	}
	if p := r.peerByID(m.from); p != nil {
		p.active = true
	}
	switch {
	case m.term > r.term:
		if m.typ == mVote || (m.typ == mVoteResp && m.pre && m.granted) {
			// A (pre-)vote from a higher term does not move us to it: a
			// pre-vote never changes terms, and while we still hear from a
			// live leader we refuse to be disrupted (check-quorum's lease).
			if m.typ == mVote && !m.pre && !r.inLease() {
				r.becomeFollower(m.term, 0)
			}
		} else {
			leader := ID(0)
			if m.typ == mApp || m.typ == mSnap {
				leader = m.from
			}
			r.becomeFollower(m.term, leader)
		}
	case m.term < r.term && m.term != 0:
		// A stale leader or candidate: tell it our term so it steps down.
		switch m.typ {
		case mApp, mSnap:
			r.send(m.from, &message{typ: mAppResp, match: 0})
		case mVote:
			r.send(m.from, &message{typ: mVoteResp, pre: m.pre})
		}
		return
	}
	switch m.typ {
	case mVote:
		r.handleVote(m)
		return
	case mProp:
		if r.role == Leader {
			_, _, _ = r.Propose(m.data)
		} else if r.leader != 0 && r.leader != m.from {
			r.sendNow(r.leader, &message{typ: mProp, data: m.data})
		}
		return
	case mReadIndex:
		r.reads.remoteRequest(m)
		return
	case mReadIndexResp:
		r.reads.remoteAnswer(m)
		return
	case mHost:
		if r.hooks.HostMessage != nil {
			r.hooks.HostMessage(m.from, m.data)
		}
		return
	}
	if r.termUnknown && (m.typ == mApp || m.typ == mSnap || m.typ == mPeerAck) {
		return // no acknowledgement may count before the term is known
	}
	switch r.role {
	case Leader:
		r.stepLeader(m)
	case Candidate, PreCandidate:
		r.stepCandidate(m)
	case Follower:
		r.stepFollower(m)
	}
}

// ---- elections ----

// inLease: we heard from a leader within the minimum election timeout, so
// a vote request is from a server that is partitioned from it, or rushing.
func (r *Raft) inLease() bool {
	return r.leader != 0 && r.electionElapsed < r.cfg.ElectionTicks
}

func (r *Raft) handleVote(m *message) {
	canVote := r.vote == m.from || (r.vote == 0 && r.leader == 0) || (m.pre && m.term > r.term)
	upToDate := m.lastTerm > r.log.lastTerm() || (m.lastTerm == r.log.lastTerm() && m.lastIndex >= r.log.lastIndex())
	grant := canVote && upToDate && !r.abstain && !r.inLease()
	resp := &message{typ: mVoteResp, pre: m.pre, granted: grant}
	if m.pre {
		// A granted pre-vote answers in the term the candidate would use.
		if grant {
			resp.term = m.term
		}
		r.send(m.from, resp)
		return
	}
	if grant {
		r.vote = m.from
		r.electionElapsed = 0
		r.st.saveState()
	}
	r.send(m.from, resp)
}

func (r *Raft) tick() {
	for _, p := range r.peers {
		if p.conn == 0 {
			if p.redial > 0 {
				p.redial--
			} else {
				p.conn = r.env.Dial(p.addr)
			}
		}
	}
	r.electionElapsed++
	if r.role == Leader {
		r.heartbeatElapsed++
		if r.electionElapsed >= r.cfg.ElectionTicks {
			r.electionElapsed = 0
			r.checkQuorum()
			if r.role != Leader {
				return
			}
		}
		r.heartbeatElapsed = 0
		r.broadcastHeartbeat()
		return
	}
	if r.termUnknown {
		for _, p := range r.peers {
			r.sendNow(p.id, &message{typ: mTermQuery})
		}
	}
	if r.electionElapsed >= r.electionTimeout && !r.abstain {
		r.startPreVote()
	}
	r.reads.expireRemote()
}

// termLearned takes a peer's answer to mTermQuery: its term, if higher,
// becomes ours; once enough peers have answered, our term is at least any
// we may have promised before we lost it (a majority that elected or
// acknowledged a leader in that term had quorum-1 other members, and we
// heard from all but quorum-1 of the others), and we may answer leaders.
func (r *Raft) termLearned(m *message) {
	if !r.termUnknown {
		return
	}
	if m.term > r.term {
		r.becomeFollower(m.term, 0)
	}
	if r.termHeard == nil {
		r.termHeard = make(map[ID]bool)
	}
	r.termHeard[m.from] = true
	if len(r.termHeard) >= r.termWitnesses() {
		r.termUnknown = false
		r.termHeard = nil
		r.st.saveState()
		r.env.Logf("raft: %d learned term %d from %d others; it answers leaders again", r.cfg.ID, r.term, r.termWitnesses())
	}
}

// termWitnesses is how many others a server that lost its term must hear
// from: all but quorum-1 of them (none in a one-server cluster).
func (r *Raft) termWitnesses() int {
	return min(len(r.cfg.Peers)-r.quorum+1, len(r.peers))
}

// checkQuorum steps a leader down when it has not heard from a majority for
// an election timeout: a partitioned leader stops claiming leadership, so
// clients go elsewhere and its lease-based refusals expire.
func (r *Raft) checkQuorum() {
	active := 1
	for _, p := range r.peers {
		if p.active {
			active++
		}
		p.active = false
	}
	if active < r.quorum {
		r.env.Logf("raft: leader %d heard from only %d of %d; stepping down", r.cfg.ID, active, len(r.cfg.Peers))
		r.becomeFollower(r.term, 0)
	}
}

func (r *Raft) resetElectionTimer() {
	r.electionElapsed = 0
	e := r.cfg.ElectionTicks
	r.electionTimeout = e + r.env.Rand().IntN(e)
}

func (r *Raft) setRole(role Role, leader ID) {
	changed := r.role != role || r.leader != leader
	r.role, r.leader = role, leader
	if changed && r.hooks.RoleChanged != nil {
		r.hooks.RoleChanged(role, r.term, leader)
	}
}

func (r *Raft) becomeFollower(term Term, leader ID) {
	if term > r.term {
		r.term = term
		r.vote = 0
		r.st.saveState()
		// A snapshot half received from the last term's leader will not
		// be finished: the next leader starts its own, or sends entries.
		// Kept, it would block every local snapshot (storage.maybeSnapshot)
		// for as long as it stayed.
		r.st.dropRecv()
	}
	r.resetElectionTimer()
	r.votes = nil
	wasLeader := r.role == Leader
	r.setRole(Follower, leader)
	if wasLeader {
		r.reads.lostLeadership()
	}
}

func (r *Raft) startPreVote() {
	r.resetElectionTimer()
	r.leader = 0
	r.setRole(PreCandidate, 0)
	r.votes = map[ID]bool{r.cfg.ID: true}
	if r.tallyWon() {
		r.startElection()
		return
	}
	for _, p := range r.peers {
		r.send(p.id, &message{typ: mVote, pre: true, term: r.term + 1, lastIndex: r.log.lastIndex(), lastTerm: r.log.lastTerm()})
	}
}

func (r *Raft) startElection() {
	if r.term >= MaxTerm {
		r.env.Halt("raft: term space exhausted (zxid epochs are 32 bits)")
		return
	}
	r.term++
	r.vote = r.cfg.ID
	r.st.saveState()
	r.st.dropRecv()
	r.resetElectionTimer()
	r.setRole(Candidate, 0)
	r.votes = map[ID]bool{r.cfg.ID: true}
	if r.tallyWon() {
		r.becomeLeader()
		return
	}
	for _, p := range r.peers {
		r.send(p.id, &message{typ: mVote, lastIndex: r.log.lastIndex(), lastTerm: r.log.lastTerm()})
	}
}

func (r *Raft) tallyWon() bool {
	n := 0
	for _, granted := range r.votes { // order-independent: counting
		if granted {
			n++
		}
	}
	return n >= r.quorum
}

func (r *Raft) tallyLost() bool {
	n := 0
	for _, granted := range r.votes { // order-independent: counting
		if !granted {
			n++
		}
	}
	return n > len(r.cfg.Peers)-r.quorum
}

func (r *Raft) stepCandidate(m *message) {
	switch m.typ {
	case mApp, mSnap:
		// A leader of our term exists.
		r.becomeFollower(m.term, m.from)
		r.stepFollower(m)
	case mVoteResp:
		if m.pre != (r.role == PreCandidate) {
			return
		}
		if _, dup := r.votes[m.from]; dup {
			return
		}
		r.votes[m.from] = m.granted
		switch {
		case r.tallyWon() && r.role == PreCandidate:
			r.startElection()
		case r.tallyWon():
			r.becomeLeader()
		case r.tallyLost():
			r.becomeFollower(r.term, 0)
		}
	}
}

func (r *Raft) becomeLeader() {
	r.setRole(Leader, r.cfg.ID)
	r.votes = nil
	r.zxidCount = 0
	r.electionElapsed = 0
	for _, p := range r.peers {
		p.next = r.log.lastIndex() + 1
		p.match = 0
		p.inflight = 0
		p.probing = true
		p.active = true
		p.readSeq = 0
		p.snap = nil
		p.commitSent = 0
		p.sentMax = 0
	}
	r.env.Logf("raft: %d leads term %d (last index %d)", r.cfg.ID, r.term, r.log.lastIndex())
	r.appendLeaderEntry(EntryNoop, nil)
	r.broadcastAppend()
}

// ---- sending ----

// send encodes m and sends it to peer id once everything written so far is
// durable: a server must never let a message carrying a term, a vote or an
// acknowledgement outrun the disk that backs it.
func (r *Raft) send(to ID, m *message) {
	p := r.peerByID(to)
	if p == nil {
		return
	}
	if p.conn == 0 {
		return // no connection: Raft tolerates the loss, the next tick retries
	}
	m.from = r.cfg.ID
	if m.term == 0 {
		m.term = r.term
	}
	r.st.sendDurable(p.conn, m.encode(nil))
}

// sendNow sends without waiting for the disk. Only messages that promise
// nothing about this server's disk may: the leader's appends and heartbeats
// (they carry entries the followers make durable themselves, and a term the
// leader made durable when it stood for election), forwarded proposals,
// ReadIndex requests and answers, and host messages.
func (r *Raft) sendNow(to ID, m *message) {
	p := r.peerByID(to)
	if p == nil || p.conn == 0 {
		return
	}
	m.from = r.cfg.ID
	if m.term == 0 {
		m.term = r.term
	}
	r.env.Send(p.conn, m.encode(nil))
}

func (r *Raft) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "raft %d %v term=%d leader=%d commit=%d applied=%d last=%d", r.cfg.ID, r.role, r.term, r.leader, r.commit, r.applied, r.log.lastIndex())
	return b.String()
}
