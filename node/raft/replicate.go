package raft

import (
	"fmt"
	"hash/crc32"
	"slices"

	"herd/node"
)

// ---- leader ----

// snapSend is an install-snapshot in progress to one follower.
type snapSend struct {
	name   string // the file being streamed (a newer snapshot may replace it)
	meta   snapMeta
	size   int64
	offset int64 // acknowledged bytes
	busy   bool  // a chunk is being read or awaits its acknowledgement
	idle   int   // ticks without progress
}

func (r *Raft) broadcastAppend() {
	for _, p := range r.peers {
		r.sendAppends(p)
	}
}

// sendAppends sends what p lacks, as far as flow control allows: one probe
// at a time while we do not know where p's log matches ours, then a pipeline
// of up to MaxInflight messages. Like Nagle's algorithm, a message that
// would not be full waits while another is in flight: the follower could
// not write it before its disk finishes the one in flight anyway, and the
// acknowledgement releases everything that gathered meanwhile in one
// message, one write and one fsync. Sending each flush's few entries at once
// costs a message, a wakeup and often an fsync per flush on both sides,
// which is most of a write's CPU when many small writes arrive.
// It reports whether it sent anything.
func (r *Raft) sendAppends(p *peer) (sent bool) {
	for p.snap == nil && p.inflight < r.cfg.MaxInflight && !(p.probing && p.inflight > 0) {
		if !p.probing && p.next > r.log.lastIndex() {
			return sent
		}
		if !p.probing && p.match+1 < p.next && !r.cfg.NoAppendCoalescing && !r.fullAppend(p.next) {
			return sent // entries sent earlier are not acknowledged yet
		}
		if !r.sendAppend(p, false) {
			return sent
		}
		sent = true
		if p.probing {
			return sent
		}
	}
	return sent
}

// fullAppend reports whether the entries from next on fill an append message.
func (r *Raft) fullAppend(next Index) bool {
	size := 0
	for run := r.log.slice(next, r.log.lastIndex()); len(run) > 0; run = r.log.slice(next, r.log.lastIndex()) {
		for _, e := range run {
			if size += len(e.Data) + 32; size > r.cfg.MaxAppendBytes {
				return true
			}
		}
		next += Index(len(run))
	}
	return false
}

// appendEntries returns the entries of an append starting at next: as many
// as fit in MaxAppendBytes (at least one, if any is held). sendNow encodes
// the message at once, so they may alias the log; entries that cross from
// one of the log's chunks into the next are gathered in appendBuf.
func (r *Raft) appendEntries(next Index) (es []Entry, gathered bool) {
	last := r.log.lastIndex()
	es = r.log.slice(next, last)
	size, k := 0, 0
	for ; k < len(es); k++ {
		if k > 0 && size+len(es[k].Data) > r.cfg.MaxAppendBytes {
			return es[:k:k], false
		}
		size += len(es[k].Data) + 32
	}
	if after := next + Index(k); after > last || size+len(r.log.at(after).Data) > r.cfg.MaxAppendBytes {
		return es, false
	}
	buf := append(r.appendBuf[:0], es...)
	for run := r.log.slice(next+Index(k), last); len(run) > 0; run = r.log.slice(next+Index(len(buf)), last) {
		for _, e := range run {
			if size+len(e.Data) > r.cfg.MaxAppendBytes {
				r.appendBuf = buf
				return buf, true
			}
			size += len(e.Data) + 32
			buf = append(buf, e)
		}
	}
	r.appendBuf = buf
	return buf, true
}

// sendAppend sends one append (a heartbeat if empty) starting at p.next.
func (r *Raft) sendAppend(p *peer, heartbeat bool) bool {
	prev := p.next - 1
	prevTerm, ok := r.log.term(prev)
	if !ok {
		r.startSnapshotSend(p)
		return false
	}
	m := &message{typ: mApp, prevIndex: prev, prevTerm: prevTerm, commit: r.commit, readSeq: r.reads.seq, allHold: r.heldByAll()}
	m.commitTerm, _ = r.log.term(r.commit)
	gathered := false
	if !heartbeat {
		m.entries, gathered = r.appendEntries(p.next)
	}
	r.sendNow(p.id, m)
	p.commitSent = m.commit
	if len(m.entries) > 0 || p.probing {
		p.inflight++
	}
	if n := len(m.entries); n > 0 {
		lastSent := m.entries[n-1].Index
		if !p.probing {
			p.next = lastSent + 1
		}
		p.sentMax = max(p.sentMax, lastSent)
	}
	if gathered {
		clear(r.appendBuf) // do not pin the entries' data
		r.appendBuf = r.appendBuf[:0]
	}
	return true
}

func (r *Raft) broadcastHeartbeat() {
	for _, p := range r.peers {
		switch {
		case p.snap != nil:
			if p.snap.idle++; p.snap.idle > r.cfg.ElectionTicks {
				p.snap = nil // lost somewhere: start over
				p.probing = true
			}
		case p.probing:
			// A probe may have been lost with its connection: ask again.
			p.inflight = 0
			r.sendAppends(p)
		case p.next <= r.log.lastIndex() && p.inflight < r.cfg.MaxInflight && r.sendAppends(p):
		default:
			r.sendAppend(p, true)
		}
	}
}

func (r *Raft) stepLeader(m *message) {
	p := r.peerByID(m.from)
	if p == nil {
		return
	}
	switch m.typ {
	case mAppResp:
		if m.readSeq > p.readSeq {
			p.readSeq = m.readSeq
			r.reads.acked()
		}
		if m.success {
			if m.match > p.match {
				p.match = m.match
			}
			p.next = max(p.next, p.match+1)
			p.inflight = max(p.inflight-1, 0)
			if p.probing {
				p.probing = false
				p.inflight = 0
			}
			r.maybeCommit()
			r.sendAppends(p)
			return
		}
		// Rejected: m.match is the prevIndex that did not match, m.lastIndex
		// the follower's last entry. Answers arrive in order on one
		// connection, so a rejection is never stale: one at or below what
		// the follower acknowledged means it lost data it had (corruption,
		// a wiped disk) and is being repaired. Forget its old match;
		// lowering a match is always safe, the commit index never moves
		// back.
		if m.match <= p.match {
			r.env.Logf("raft: %d no longer holds entry %d it acknowledged (its log ends at %d); repairing it", p.id, m.match, m.lastIndex)
			p.match = 0
		}
		p.next = max(p.match+1, min(m.match, m.lastIndex+1))
		p.probing = true
		p.inflight = 0
		r.sendAppends(p)
	case mSnapResp:
		r.snapshotAcked(p, m)
	}
}

// maybeCommit advances the commit index to the highest entry of the current
// term that a majority holds durably (the leader counts itself only up to
// its own durable index). Entries of earlier terms commit with it (§5.4.2).
func (r *Raft) maybeCommit() {
	ms := make([]Index, 0, len(r.peers)+1)
	ms = append(ms, min(r.st.durable, r.log.lastIndex()))
	for _, p := range r.peers {
		ms = append(ms, p.match)
	}
	slices.Sort(ms)
	slices.Reverse(ms)
	n := ms[r.quorum-1]
	if r.cfg.Bug == BugCommitOnMinority {
		n = ms[0]
	}
	if n <= r.commit {
		return
	}
	if t, _ := r.log.term(n); t != r.term {
		return
	}
	r.commit = n
	if r.hooks.Committed != nil {
		r.hooks.Committed(r.term, n)
	}
	r.applyCommitted()
	r.reads.commitAdvanced()
}

// ---- snapshot sending ----

func (r *Raft) startSnapshotSend(p *peer) {
	s := &r.st
	if s.snap.name == "" || s.snap.meta.Index < r.log.first-1 {
		// The entries p needs are gone but no snapshot covers them yet:
		// one is being written, or is taken now (trimLog drops entries
		// newer than the snapshot once every server held them; p has
		// lost some since).
		if s.open && !s.snapshotting && s.recv == nil && r.cfg.Bug != BugNoDemandSnapshot {
			r.env.Logf("raft: %d: %d needs entries from %d, before the log's first %d and after snapshot %d: taking a snapshot", r.cfg.ID, p.id, p.next, r.log.first, s.snap.meta.Index)
			s.takeSnapshot()
		}
		return
	}
	p.snap = &snapSend{name: s.snap.name, meta: s.snap.meta, size: s.snap.size}
	r.sendSnapChunk(p)
}

func (r *Raft) sendSnapChunk(p *peer) {
	ss := p.snap
	n := int(min(int64(r.cfg.SnapshotChunk), ss.size-ss.offset))
	ss.busy = true
	ss.idle = 0
	r.st.readFile(ss.name, ss.offset, n, func(data []byte, err error) {
		if p.snap != ss || r.role != Leader {
			return // cancelled meanwhile
		}
		if err != nil || len(data) != n {
			r.env.Logf("raft: reading %s for %d: %v; will retry", ss.name, p.id, err)
			p.snap = nil
			return
		}
		r.sendNow(p.id, &message{typ: mSnap, snapIndex: ss.meta.Index, snapTerm: ss.meta.Term, snapZxid: ss.meta.Zxid,
			offset: uint64(ss.offset), total: uint64(ss.size), done: ss.offset+int64(n) == ss.size, data: data})
	})
}

func (r *Raft) snapshotAcked(p *peer, m *message) {
	ss := p.snap
	if ss == nil || m.snapIndex != ss.meta.Index {
		return
	}
	switch {
	case !m.success:
		r.env.Logf("raft: %d refused snapshot %d at byte %d; starting over", p.id, ss.meta.Index, m.offset)
		p.snap = nil
		p.probing = true
		if m.offset == 0 && ss.offset+int64(r.cfg.SnapshotChunk) >= ss.size {
			// Refused whole, after the last chunk: the follower found the
			// file's checksums wrong, so our copy is damaged on disk
			// (resending it would fail forever: the consensus scenario
			// stalled so at seed 2002327). Write a new one from the state.
			r.st.retakeSnapshot(ss.name)
		}
	case m.offset >= uint64(ss.size):
		p.snap = nil
		p.match = max(p.match, m.match)
		p.next = p.match + 1
		p.probing = true
		p.inflight = 0
		r.maybeCommit()
		r.sendAppends(p)
	default:
		ss.offset = int64(m.offset)
		r.sendSnapChunk(p)
	}
}

// ---- follower ----

func (r *Raft) stepFollower(m *message) {
	switch m.typ {
	case mApp:
		r.electionElapsed = 0
		if r.leader != m.from {
			r.setRole(Follower, m.from)
		}
		r.handleAppend(m)
	case mSnap:
		r.electionElapsed = 0
		if r.leader != m.from {
			r.setRole(Follower, m.from)
		}
		r.handleSnapshot(m)
	case mPeerAck:
		if p := r.peerByID(m.from); p != nil && m.term == r.term && (p.ackTerm != m.term || m.match > p.ackMatch) {
			p.ackMatch, p.ackTerm = m.match, m.term
			r.peerAcked()
		}
	}
}

// peerAcked advances a follower's commit index from what it and its fellow
// followers hold durably of the current leader's log, without waiting for
// the leader to count the acknowledgements and pass the result on: a
// follower's clients then hear of their writes one hop sooner (forwarded
// to the leader and answered by the follower, their writes took six
// hops). Each follower, once a batch of the leader's entries is durable,
// acknowledges it to the other followers as well as to the leader.
//
// It is raft's commit rule applied with less knowledge: every
// acknowledgement counted is of term r.term, hence of its one leader's
// log (a follower's log equals the leader's up to the end of an append it
// accepted in that term, and the leader never changes its log below its
// last index); the leader's own copy counts as not durable, as we cannot
// know; an index commits when a majority holds it durably and its entry
// is of the current term, and everything before it with it.
func (r *Raft) peerAcked() {
	if r.role != Follower || r.leaderMatchTerm != r.term || r.cfg.NoPeerAcks {
		return
	}
	var buf [8]Index
	ms := append(buf[:0], min(r.st.durable, r.leaderMatch, r.log.lastIndex()))
	for _, p := range r.peers {
		if p.id != r.leader && p.ackTerm == r.term {
			ms = append(ms, p.ackMatch)
		} else if p.id == r.leader && r.cfg.Bug == BugPeerAckLeader {
			ms = append(ms, r.leaderMatch)
		} else {
			ms = append(ms, 0) // the leader, or no word from it this term
		}
	}
	slices.Sort(ms)
	// Others may hold a majority past what we hold of the leader's log;
	// we can only vouch for the term of entries we hold.
	n := min(ms[len(ms)-r.quorum], r.leaderMatch, r.log.lastIndex())
	if n <= r.commit {
		return
	}
	t, ok := r.log.term(n)
	if !ok {
		panic(fmt.Sprintf("raft: %d: no term for entry %d above commit %d (log %d..%d)", r.cfg.ID, n, r.commit, r.log.first, r.log.lastIndex()))
	}
	if t != r.term {
		return
	}
	r.commit = n
	r.peerCommits++
	if r.hooks.Committed != nil {
		r.hooks.Committed(r.term, n)
	}
	r.applyCommitted()
}

// ackPeers tells the other followers, once it is durable, that we hold the
// leader's log up to match.
func (r *Raft) ackPeers(match Index) {
	if r.cfg.NoPeerAcks || len(r.peers) < 2 {
		return
	}
	if r.peerAckSentTerm == r.term && match <= r.peerAckSent {
		return
	}
	r.peerAckSent, r.peerAckSentTerm = match, r.term
	for _, p := range r.peers {
		if p.id != r.leader {
			r.send(p.id, &message{typ: mPeerAck, match: match})
		}
	}
}

func (r *Raft) handleAppend(m *message) {
	l := &r.log
	reject := func() {
		r.send(m.from, &message{typ: mAppResp, match: m.prevIndex, lastIndex: l.lastIndex(), lastTerm: l.lastTerm(), readSeq: m.readSeq})
	}
	prev, prevTerm, entries := m.prevIndex, m.prevTerm, m.entries
	if prev < l.first-1 {
		// Entries we no longer hold were applied here (they are in our
		// snapshot, or trimLog dropped them), hence committed, hence the
		// leader's too: skip them and check from our first.
		k := 0
		for k < len(entries) && entries[k].Index <= l.first-1 {
			k++
		}
		entries = entries[k:]
		prev, prevTerm = l.first-1, l.prevTerm
	}
	if t, ok := l.term(prev); !ok || t != prevTerm {
		reject()
		return
	}
	for i, e := range entries {
		if e.Index <= l.lastIndex() {
			if lt, _ := l.term(e.Index); lt == e.Term || r.cfg.Bug == BugNoTruncate {
				continue
			}
			if e.Index <= r.commit {
				panic(fmt.Sprintf("raft: %d: leader %d term %d overwrites committed entry %d (commit %d)", r.cfg.ID, m.from, m.term, e.Index, r.commit))
			}
			l.truncateFrom(e.Index)
			r.st.truncated(e.Index)
		}
		for _, e := range entries[i:] {
			l.append(e)
		}
		r.st.appendEntries(entries[i:])
		break
	}
	lastNew := max(m.prevIndex+Index(len(m.entries)), l.first-1)
	if r.allHoldTerm != r.term || m.allHold > r.allHold {
		r.allHold, r.allHoldTerm = m.allHold, r.term
	}
	if m.commit > r.commit {
		r.commit = max(r.commit, min(m.commit, lastNew))
		r.applyCommitted()
	}
	if r.abstain && m.commitTerm == m.term && lastNew >= m.commit && m.commit > 0 {
		// We hold the leader's log up to a commit point of its own term,
		// so every entry committed before this leader took over. Once that
		// is durable we may vote again.
		r.st.clearAbstainAt = m.commit
		r.st.maybeClearAbstain()
	}
	r.send(m.from, &message{typ: mAppResp, success: true, match: lastNew, readSeq: m.readSeq})
	if r.leaderMatchTerm != r.term || lastNew > r.leaderMatch {
		r.leaderMatch, r.leaderMatchTerm = lastNew, r.term
	}
	r.ackPeers(lastNew)
	r.peerAcked()
}

// snapRecv is an install-snapshot being received. A state machine that
// implements IncrementalRestore gets the image as it arrives, and the file
// is written as it arrives (tmp); otherwise it is gathered whole (buf).
type snapRecv struct {
	index Index
	total uint64
	got   uint64 // bytes received
	buf   []byte

	tmp     string          // the file being written (streamed)
	dec     SnapshotDecoder // nil until the header is in
	head    []byte          // the file's header, once all of it is in
	meta    snapMeta
	dataCRC uint32 // what the header says
	crc     uint32 // of the data received
	decErr  error
}

// dropRecv abandons the snapshot being received, if any, and its file.
func (s *storage) dropRecv() {
	if rv := s.recv; rv != nil && rv.tmp != "" {
		s.do(node.RemoveOp(rv.tmp), ignoreErr)
	}
	s.recv = nil
}

func (r *Raft) handleSnapshot(m *message) {
	s := &r.st
	ack := func(off uint64, ok bool, match Index) {
		r.send(m.from, &message{typ: mSnapResp, snapIndex: m.snapIndex, offset: off, success: ok, match: match})
	}
	if m.snapIndex <= r.commit {
		// We already hold everything it covers.
		s.dropRecv()
		ack(m.total, true, r.commit)
		return
	}
	if m.offset == 0 {
		s.dropRecv()
		s.recv = &snapRecv{index: m.snapIndex, total: m.total}
		if _, ok := r.sm.(IncrementalRestore); ok {
			s.recv.tmp = s.path(snapshotName(m.snapIndex) + ".recv.tmp")
		}
	}
	rv := s.recv
	if rv == nil || rv.index != m.snapIndex || rv.total != m.total || rv.got != m.offset || m.offset+uint64(len(m.data)) > m.total {
		s.dropRecv()
		ack(m.offset, false, 0)
		return
	}
	if rv.tmp != "" {
		if !r.receivePiece(rv, m.data) {
			s.dropRecv()
			ack(0, false, 0)
			return
		}
	} else {
		rv.buf = append(rv.buf, m.data...)
	}
	rv.got += uint64(len(m.data))
	if !m.done {
		ack(rv.got, true, 0)
		return
	}
	if rv.tmp != "" {
		r.installReceived(rv, m, ack)
		return
	}
	s.recv = nil
	meta, data, err := decodeSnapshot(rv.buf)
	if err != nil || meta.Index != m.snapIndex || uint64(len(rv.buf)) != m.total {
		r.env.Logf("raft: snapshot %d from %d is damaged: %v", m.snapIndex, m.from, err)
		ack(0, false, 0)
		return
	}
	r.installSnapshot(meta, func() error { return r.sm.Restore(data, meta.Index, meta.Zxid) },
		func(meta snapMeta, done func()) { s.writeSnapshot(meta, encodeSnapshot(meta, data), done) },
		func() { ack(m.total, true, meta.Index) })
}

// receivePiece writes the next piece of a streamed snapshot to its file and
// hands its data to the decoder, once the header has come and been found
// sound. It reports false if the header is not.
func (r *Raft) receivePiece(rv *snapRecv, p []byte) bool {
	r.st.do(node.WriteOp(rv.tmp, int64(rv.got), p), nil)
	if rv.dec == nil {
		need := snapHeader - len(rv.head)
		rv.head = append(rv.head, p[:min(need, len(p))]...)
		p = p[min(need, len(p)):]
		if len(rv.head) < snapHeader {
			return true
		}
		meta, sum, err := checkSnapshotHeader(rv.head, rv.index, rv.total)
		if err != nil {
			r.env.Logf("raft: snapshot %d being received: %v", rv.index, err)
			return false
		}
		rv.meta, rv.dataCRC = meta, sum
		rv.dec = r.sm.(IncrementalRestore).BeginRestore(int64(rv.total - snapHeader))
	}
	rv.crc = crc32.Update(rv.crc, castagnoli, p)
	if rv.decErr == nil && len(p) > 0 {
		rv.decErr = rv.dec.Write(p)
	}
	return true
}

// installReceived installs a streamed snapshot whose last piece has come:
// the image is checked and decoded already, and its file written but for
// the header, which installSnapshot's meta changes.
func (r *Raft) installReceived(rv *snapRecv, m *message, ack func(off uint64, ok bool, match Index)) {
	s := &r.st
	if rv.dec == nil || rv.crc != rv.dataCRC {
		r.env.Logf("raft: snapshot %d from %d is damaged: %v", m.snapIndex, m.from, errBadSnapshot)
		s.dropRecv()
		ack(0, false, 0)
		return
	}
	s.recv = nil
	if rv.decErr != nil {
		r.env.Halt(fmt.Sprintf("raft: restoring snapshot %d: %v", rv.index, rv.decErr))
		return
	}
	r.installSnapshot(rv.meta, func() error { return rv.dec.Install(rv.meta.Index, rv.meta.Zxid) },
		func(meta snapMeta, done func()) {
			s.do(node.WriteOp(rv.tmp, 0, snapshotHeader(meta, rv.total-snapHeader, rv.dataCRC)), nil)
			s.commitSnapshot(rv.tmp, meta, int64(rv.total), done)
		},
		func() { ack(m.total, true, rv.meta.Index) })
}

// installSnapshot replaces the state machine and the log up to meta.Index.
// Following entries are kept if the log agrees with the snapshot at its
// index (they may be acknowledged, so dropping them could lose a commit);
// otherwise the whole log goes.
//
// restore replaces the state machine's state with the snapshot's; persist
// makes the snapshot, with the meta given, the durable snapshot file, then
// calls its done.
func (r *Raft) installSnapshot(meta snapMeta, restore func() error, persist func(meta snapMeta, done func()), done func()) {
	l := &r.log
	s := &r.st
	t, ok := l.term(meta.Index)
	retain := ok && t == meta.Term && meta.Index >= l.first
	meta.VoidsOlderLog = !retain
	meta.WALSeq = max(s.nextSeq, 1)
	s.abortEncoding()
	s.walSinceSnap = 0
	if err := restore(); err != nil {
		r.env.Halt(fmt.Sprintf("raft: restoring snapshot %d: %v", meta.Index, err))
		return
	}
	if retain {
		l.snapIndex, l.snapTerm, l.snapZxid = meta.Index, meta.Term, meta.Zxid
		l.compact(meta.Index)
	} else {
		l.reset(meta.Index, meta.Term, meta.Zxid)
		s.truncated(meta.Index + 1)
		s.pending = s.pending[:0]
		s.pendingFirst, s.pendingLast = 0, 0
		s.pendingEntries = s.inflightEntries
	}
	r.commit = max(r.commit, meta.Index)
	r.applied = meta.Index
	s.snapshotting = true
	persist(meta, func() {
		s.snapshotting = false
		s.durable = max(s.durable, meta.Index)
		s.dropOldSegments()
		r.env.Logf("raft: %d installed snapshot %d (term %d, kept %d entries after it)", r.cfg.ID, meta.Index, meta.Term, l.lastIndex()-meta.Index)
		done()
	})
	// Everything written from now on goes to a new segment, sequence
	// meta.WALSeq, which the disk's FIFO writes after the snapshot is
	// durable; older segments' entries past the snapshot are void if the
	// log was discarded.
	s.rotate = true
	s.saveState()
	r.applyCommitted()
}

// ---- applying ----

func (r *Raft) applyCommitted() {
	r.applyUpTo(min(r.commit, r.log.lastIndex()))
	r.reads.applied()
	r.st.maybeSnapshot()
	r.trimLog()
}

// applyUpTo hands the state machine the entries after applied up to to.
func (r *Raft) applyUpTo(to Index) {
	for r.applied < to {
		i := r.applied + 1
		r.sm.Apply(r.log.at(i))
		r.applied = i
	}
}

// heldByAll is, on a leader, the point up to which every server holds its
// log durably (0 until every follower has acknowledged an append in this
// term).
func (r *Raft) heldByAll() Index {
	h := min(r.st.durable, r.log.lastIndex())
	for _, p := range r.peers {
		h = min(h, p.match)
	}
	return h
}

// trimLog drops from the in-memory log what no server should need again,
// up to the latest of three points:
//   - the latest snapshot's index, but for the SnapshotKeep entries before
//     it (for followers that lag a little);
//   - while the server recovers (storage.applyReplayed), what it has
//     applied, but for the SnapshotKeep entries before it, a chunk at a
//     time, so that a restart does not hold the whole WAL since the
//     snapshot (SnapshotLogRatio puts snapshots far apart). Not once it
//     takes part: a snapshot taken on demand for a lagging server
//     (startSnapshotSend) must still find the entries after it when it is
//     written, and with this point moving on as entries were applied it
//     never did (consensus seed 144547126: the leader took one snapshot
//     after another while its follower waited);
//   - the point up to which every server holds the log durably (heldByAll
//     on the leader; on a follower, what the leader last said), applied and
//     durable here, but for the newest Config.LogKeep entries before it; a
//     chunk at a time, since it moves with every apply and a compaction
//     inside a chunk clears the chunk's slots up to it.
//
// Without the third the log held every entry since the last snapshot and
// SnapshotKeep before it: 38-42 MB of a keeper's heap after a million
// creates (DESIGN.md, section 6). An entry behind that point is needed again
// only by a server that lost part of its log (damage found at recovery), or
// one a new leader finds further behind than LogKeep: it gets a snapshot,
// taken then if none covers what it lacks (startSnapshotSend). While some
// server lags, the point stays behind it and only the first two apply.
func (r *Raft) trimLog() {
	l := &r.log
	var to Index
	if keep := Index(r.cfg.SnapshotKeep); l.snapIndex > keep {
		to = l.snapIndex - keep
	}
	chunk := Index(l.chunkLen())
	if base, keep := min(r.applied, r.st.durable), Index(r.cfg.SnapshotKeep); !r.st.open && base > keep && base-keep >= l.first-1+chunk {
		to = max(to, base-keep)
	}
	if r.cfg.LogKeep >= 0 {
		var hold Index
		switch {
		case r.role == Leader:
			hold = r.heldByAll()
		case r.allHoldTerm == r.term:
			hold = r.allHold
		}
		hold = min(hold, r.applied, r.st.durable)
		if keep := Index(r.cfg.LogKeep); hold > keep && hold-keep >= l.first-1+chunk {
			to = max(to, hold-keep)
		}
	}
	if to < l.first {
		return
	}
	if to > r.applied {
		panic(fmt.Sprintf("raft: %d: trimming the log to %d past applied %d", r.cfg.ID, to, r.applied))
	}
	l.compact(to)
}
