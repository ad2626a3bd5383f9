package raft

import (
	"cmp"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"time"

	"herd/node"
	"herd/node/trash"
)

// storage is the server's disk: the WAL writer (group commit), recovery, and
// snapshot files. Every operation goes through Env.Disk; completions come
// back through diskDone, which runs the callback registered for the op.
type storage struct {
	r   *Raft
	dir string
	ops map[node.OpID]func(ev node.Event)

	open bool // recovery is done; the writer may write

	// segments on disk, oldest first; the last is the one being written.
	segs []segFile
	// wbuf held the last batch written. Ops complete in order, so once
	// that batch's sync completed (no batch in flight) the next batch is
	// laid out in it: a fresh buffer per batch, a megabyte of fill per
	// megabyte of log, was a page fault per 4 KiB.
	wbuf []byte
	size int64 // bytes written to the last segment (sector aligned)
	// filled is how far the last segment was written, fill included: a
	// batch that ends past it carries fill up to the next multiple of
	// Config.WALFill (see wal.go).
	filled int64
	// batches counts the batches in the last segment: the next batch's
	// sequence number.
	batches uint64
	rotate  bool // start a new segment at the next flush
	// walSinceSnap: WAL bytes written since the newest snapshot was begun
	// or installed (Config.SnapshotLogRatio); after a restart, the sizes
	// of the segments after the snapshot, fill included (an estimate: the
	// ratio needs no more)
	walSinceSnap int64
	// nextSeq is the next segment's sequence number: above every segment
	// name this directory has held (removed ones included) and at least an
	// installed snapshot's WALSeq. A number reused below WALSeq would make
	// recovery treat the new segment's entries as void (the consensus
	// scenario lost acknowledged entries so at seed 999117 when recovery
	// had removed every segment and numbering restarted at 1).
	nextSeq uint64

	// The batch being assembled: records not yet written, and messages
	// that must wait until they are durable.
	pending      []byte
	pendingFirst Index // first entry index in pending (0: none)
	pendingLast  Index // last entry index in pending (0: none)
	deferred     []deferredSend
	// pendingEntries counts entries not yet durable, for Config.MaxPending.
	pendingEntries int

	// The batch written and not yet synced (at most one).
	inflight        bool
	inflightLast    Index
	inflightEntries int
	barrier         node.OpID // its sync (or syncdir); a send may wait on it

	// durable is the last index up to which the log held in memory is
	// known to be on disk.
	durable Index
	// Hard state copies: stateSeq numbers them; fileState is what the state
	// file holds (or will, once the batch that writes it is durable).
	stateSeq   uint64
	fileState  hardState
	fileExists bool
	stateDirty bool
	// clearAbstainAt: once durable reaches it, the server stops abstaining.
	clearAbstainAt Index

	batchesSynced, entriesSynced uint64 // statistics
	// batchesSubmitted counts WAL batches written; abstainClearedIn is
	// the one carrying the hard state that ended abstention: until it is
	// durable a crash brings the abstention back, so Status still reports
	// it (the simulator's corruption gate trusted the cleared flag too
	// early: consensus seed 81000029).
	batchesSubmitted, abstainClearedIn uint64

	snap         segSnap // the newest durable snapshot file
	snapshotting bool
	// walHolds counts installed snapshots that void the older log, synced
	// or syncing but not yet renamed to their live names (commitSnapshot):
	// no WAL batch may be queued before those renames, as a segment after
	// such a snapshot durable while the snapshot is not would be grafted
	// onto the voided log.
	walHolds int
	snapGap  Index // entries after snap to take the next one at (0: not drawn yet)
	// encoder is an incremental snapshot being encoded (applying goes
	// on); encMeta describes it. Its pieces are written to encTmp as
	// they come: encLen bytes so far after the header, checksum encCRC.
	encoder SnapshotEncoder
	encMeta snapMeta
	encTmp  string
	encLen  uint64
	encCRC  uint32
	// encWriting counts the encoding's pieces submitted and not yet
	// written (at most maxSnapshotPiecesInFlight: encoding waits for the
	// disk, or the pieces queued behind WAL fsyncs would add up to the
	// whole image in memory); encSeq tells this encoding's completions
	// from an aborted one's.
	encWriting int
	encSeq     uint64
	// encSpare holds written pieces' buffers (at most
	// maxSnapshotPiecesInFlight) for the encoder to fill again (Take).
	encSpare [][]byte
	// encUnsynced counts the encoding's bytes written since its last
	// sync (see Config.SnapshotSyncBytes).
	encUnsynced int
	recv        *snapRecv

	// trash empties files no longer needed (old snapshots and segments)
	// step by step (see discard).
	trash *trash.Bin
}

type segFile struct {
	name  string
	seq   uint64
	first Index
}

type segSnap struct {
	name string
	meta snapMeta
	size int64
}

type deferredSend struct {
	conn node.ConnID
	data []byte
}

func (s *storage) init(r *Raft) {
	s.r = r
	s.dir = r.cfg.Dir
	s.ops = make(map[node.OpID]func(node.Event))
	s.trash = trash.New(trash.Host{
		Disk:     func(op node.DiskOp, done func(node.Event)) { s.do(op, done) },
		SetTimer: func(d time.Duration) { r.env.SetTimer(timerTrim, d) },
		Fail:     func(err error) { r.env.Halt("raft: " + err.Error()) },
	}, trash.Config{StepBytes: r.cfg.TrimBytes})
}

func (s *storage) path(name string) string { return s.dir + "/" + name }

// do submits op; cb (if any) runs on completion. Without a callback a
// failure halts the server: a write or fsync that failed may have lost data,
// and after fsyncgate nothing later can be trusted.
func (s *storage) do(op node.DiskOp, cb func(ev node.Event)) node.OpID {
	id := s.r.env.Disk(op)
	if id == 0 {
		return 0 // halted
	}
	if cb != nil {
		s.ops[id] = cb
	}
	return id
}

func (s *storage) diskDone(ev node.Event) bool {
	cb, ok := s.ops[ev.Op]
	if ok {
		delete(s.ops, ev.Op)
		cb(ev)
		return true
	}
	if ev.Err != nil {
		s.r.env.Halt(fmt.Sprintf("raft: %v failed: %v", ev.OpKind, ev.Err))
	}
	return true // every disk op of this node's core is raft's
}

// ---- writing ----

func (s *storage) appendEntries(es []Entry) {
	for i := range es {
		e := &es[i]
		if s.pendingFirst == 0 {
			s.pendingFirst = e.Index
		}
		s.pending = appendEntryRec(s.pending, e)
		s.pendingLast = e.Index
		s.pendingEntries++
	}
}

// saveState queues the current hard state for the next batch, and for the
// state file if anything but the commit hint changed.
func (s *storage) saveState() {
	s.pending = appendStateRec(s.pending, s.nextState())
}

func (s *storage) nextState() hardState {
	h := s.newState()
	// The state file keeps what a server promised (term, vote) and what
	// it knows it lost (abstain, term unknown); the commit hint alone is
	// not worth its fsync.
	cmp := h
	cmp.Seq, cmp.Commit = s.fileState.Seq, s.fileState.Commit
	if cmp != s.fileState || !s.fileExists {
		s.stateDirty = true
	}
	return h
}

// newState numbers a copy of the current hard state.
func (s *storage) newState() hardState {
	r := s.r
	s.stateSeq++
	return hardState{Seq: s.stateSeq, Term: r.term, Vote: r.vote, Commit: r.commit, Abstain: r.abstain, TermUnknown: r.termUnknown}
}

// writeStateFile writes the current hard state to the state file and
// returns the op after which it is durable.
func (s *storage) writeStateFile(cb func(node.Event)) node.OpID {
	h := s.newState()
	// The state file is not ordered with the WAL the way the WAL's own
	// hints are with its entries: it is queued behind a batch's sync, and
	// whether that sync succeeded is learned only after both ran. A commit
	// hint in it may count only on what is known durable (synced batches,
	// less any truncated since; the newest durable snapshot), not on the
	// batch ahead of it, nor on entries a follower applied because its
	// leader committed them. With r.commit here, a follower's failed sync
	// followed by a power loss kept a state file whose hint covered stale
	// entries of an older term, and the next recovery applied them
	// (consensus seed 144577706).
	h.Commit = min(h.Commit, max(s.durable, s.snap.meta.Index))
	off, slot := encodeStateSlot(h)
	s.do(node.WriteOp(s.path(stateFile), off, slot), nil)
	s.fileState = h
	s.stateDirty = false
	if s.fileExists {
		return s.do(node.SyncOp(s.path(stateFile)), cb)
	}
	s.fileExists = true
	s.do(node.SyncOp(s.path(stateFile)), nil)
	return s.do(node.SyncDirOp(s.dir), cb)
}

// truncated records that the log dropped entries from i on: they are no
// longer durable, whatever the disk holds.
func (s *storage) truncated(i Index) {
	s.durable = min(s.durable, i-1)
	s.inflightLast = min(s.inflightLast, i-1)
	if s.pendingLast >= i {
		// Their records stay in the batch; the replacements written after
		// them win on replay. Only the bookkeeping moves back.
		s.pendingLast = i - 1
	}
}

// sendDurable sends data on conn once everything written so far is durable.
func (s *storage) sendDurable(conn node.ConnID, data []byte) {
	if s.r.cfg.Bug == BugAckBeforeDurable && s.open {
		s.r.env.Send(conn, data)
		return
	}
	switch {
	case len(s.pending) > 0 || !s.open:
		s.deferred = append(s.deferred, deferredSend{conn, data})
	case s.inflight:
		s.r.env.SendAfter(conn, data, s.barrier)
	default:
		s.r.env.Send(conn, data)
	}
}

// flush writes the pending batch unless one is already in flight: records
// that arrive during an fsync share the next one (group commit).
func (s *storage) flush() {
	if !s.open || s.inflight || s.walHolds > 0 || (len(s.pending) == 0 && len(s.deferred) == 0) {
		return
	}
	if len(s.pending) == 0 {
		// Messages waited only for a batch that has since become durable.
		for _, d := range s.deferred {
			s.r.env.Send(d.conn, d.data)
		}
		s.deferred = s.deferred[:0]
		return
	}
	r := s.r
	if s.rotate || s.size >= r.cfg.SegmentBytes {
		first := r.log.lastIndex() + 1
		if s.pendingFirst != 0 {
			// Pending entries below the log's first are in a snapshot; the
			// segment need not claim them.
			first = max(min(first, s.pendingFirst), r.log.first)
		}
		s.startSegment(first)
	}
	batch := encodeBatch(s.wbuf, s.batches, s.pending)
	seg := s.segs[len(s.segs)-1]
	write := batch
	if end := s.size + int64(len(batch)); r.cfg.WALFill > 0 && end > s.filled {
		s.filled = (end/r.cfg.WALFill + 1) * r.cfg.WALFill
		write = appendFill(batch, seg.seq, end, s.filled)
	}
	s.wbuf = write[:0]
	if cap(s.wbuf) > maxKeptWriteBuffer {
		s.wbuf = nil // a rare huge batch: do not hold on to it
	}
	s.do(node.WriteOp(s.path(seg.name), s.size, write), nil)
	cb := s.synced
	if s.stateDirty {
		cb = nil // the state file's sync comes last and carries the callback
	}
	if s.batches == 0 {
		// A new file's name is durable only once its directory is synced.
		s.do(node.SyncOp(s.path(seg.name)), nil)
		s.barrier = s.do(node.SyncDirOp(s.dir), cb)
	} else {
		s.barrier = s.do(node.SyncOp(s.path(seg.name)), cb)
	}
	if s.stateDirty {
		s.barrier = s.writeStateFile(s.synced)
	}
	s.size += int64(len(batch))
	s.walSinceSnap += int64(len(batch))
	s.batches++
	s.inflight = true
	s.batchesSubmitted++
	s.inflightLast = s.pendingLast
	s.inflightEntries = s.pendingEntries
	for _, d := range s.deferred {
		r.env.SendAfter(d.conn, d.data, s.barrier)
	}
	s.deferred = s.deferred[:0]
	s.pending = s.pending[:0]
	s.pendingFirst, s.pendingLast = 0, 0
}

// startSegment begins a new segment file whose log starts at first. Its
// first batch opens with the segment record and the hard state, so every
// segment is self-describing and the oldest can be deleted.
func (s *storage) startSegment(first Index) {
	r := s.r
	seq := max(s.nextSeq, 1)
	if n := len(s.segs); n > 0 && seq <= s.segs[n-1].seq {
		panic(fmt.Sprintf("raft: segment sequence %d after %d", seq, s.segs[n-1].seq))
	}
	s.nextSeq = seq + 1
	prevTerm, ok := r.log.term(first - 1)
	if !ok {
		panic(fmt.Sprintf("raft: new segment at %d but the term of %d is unknown", first, first-1))
	}
	prevZxid := r.log.prevZxid
	if first-1 >= r.log.first {
		prevZxid = r.log.at(first - 1).Zxid
	}
	head := appendSegmentRec(nil, segmentInfo{Seq: seq, FirstIndex: first, PrevTerm: prevTerm, PrevZxid: prevZxid})
	head = appendStateRec(head, s.nextState())
	s.pending = append(head, s.pending...)
	s.segs = append(s.segs, segFile{name: segmentName(seq, first), seq: seq, first: first})
	s.size = 0
	s.filled = 0
	s.batches = 0
	s.rotate = false
}

func (s *storage) synced(ev node.Event) {
	if ev.Err != nil {
		s.r.env.Halt(fmt.Sprintf("raft: wal %v failed: %v", ev.OpKind, ev.Err))
		return
	}
	r := s.r
	s.inflight = false
	s.batchesSynced++
	s.entriesSynced += uint64(s.inflightEntries)
	s.pendingEntries -= s.inflightEntries
	s.inflightEntries = 0
	if s.inflightLast > s.durable {
		s.durable = s.inflightLast
	}
	s.maybeClearAbstain()
	if r.role == Leader {
		r.maybeCommit()
	} else {
		r.peerAcked()
	}
	s.flush()
}

// settleRecovered removes what recovery found untrustworthy (segments
// after damage, a damaged tail) and syncs what it builds on, once the hard
// state recording the damage is durable; recoverySynced follows.
func (s *storage) settleRecovered(segs []segFile, kept, cut int, cutAt int64, snapName string) {
	// Segments after the damage hold data written after it: it cannot be
	// trusted, and the log was already cut before it.
	for _, seg := range segs[kept:] {
		s.do(node.RemoveOp(s.path(seg.name)), ignoreErr)
	}
	if cut >= 0 {
		name := s.path(segs[cut].name)
		s.do(node.TruncateOp(name, cutAt), nil)
		s.do(node.SyncOp(name), nil)
	}
	// What we read may never have reached the disk: a process that was
	// killed leaves its unsynced writes in the page cache, and the next
	// incarnation reads them back as if durable. Sync everything we build
	// on before writing anything after it (the disk's FIFO then orders
	// every later acknowledgement behind these).
	for _, seg := range segs[:kept] {
		s.do(node.SyncOp(s.path(seg.name)), nil)
	}
	if snapName != "" {
		s.do(node.SyncOp(s.path(snapName)), nil)
	}
	// The writer waits for all of the above: a new segment created while
	// the truncation of a damaged tail was not yet durable could survive a
	// crash that the truncation did not, leaving zeros in a segment that is
	// no longer the newest, which the next recovery must judge a loss
	// (consensus seed 115005510: with a wiped server abstaining, the
	// second abstention left no leader).
	s.barrier = s.do(node.SyncDirOp(s.dir), s.recoverySynced)
}

// recoverySynced lets the writer write once what recovery cut and synced
// is durable.
func (s *storage) recoverySynced(ev node.Event) {
	if ev.Err != nil {
		s.r.env.Halt(fmt.Sprintf("raft: recovery %v failed: %v", ev.OpKind, ev.Err))
		return
	}
	s.inflight = false
	s.flush()
}

// abstainDurable reports whether abstention still holds on disk: set, or
// cleared in a batch not yet synced.
func (s *storage) abstainDurable() bool {
	return s.r.abstain || s.batchesSynced < s.abstainClearedIn
}

// maybeClearAbstain ends abstention once the log a leader vouched for is
// durable here.
func (s *storage) maybeClearAbstain() {
	r := s.r
	if s.clearAbstainAt != 0 && s.durable >= s.clearAbstainAt {
		s.clearAbstainAt = 0
		r.abstain = false
		r.env.Logf("raft: %d caught up; it votes again", r.cfg.ID)
		s.saveState()
		s.abstainClearedIn = s.batchesSubmitted + 1 // pending goes out whole in the next batch
	}
}

// ---- snapshots ----

// maybeSnapshot takes a snapshot once enough entries were applied.
func (s *storage) maybeSnapshot() {
	r := s.r
	if s.snapGap == 0 {
		// Between SnapshotEvery/2 and SnapshotEvery entries, drawn anew
		// for each snapshot (as ZooKeeper does with snapCount), so the
		// servers do not all spend CPU and disk on encoding at once.
		half := r.cfg.SnapshotEvery / 2
		s.snapGap = Index(max(1, r.cfg.SnapshotEvery-half+r.env.Rand().Uint64N(half+1)))
	}
	if !s.open || s.snapshotting || s.recv != nil || r.applied < s.snap.meta.Index+s.snapGap {
		return
	}
	// The ratio holds while the log in memory is short, as it is while
	// every server keeps up (trimLog). While one lags, entries since the
	// last snapshot stay, and past SnapshotEvery+SnapshotKeep of them
	// snapshots come at SnapshotEvery's pace, as without the ratio.
	if ratio := r.cfg.SnapshotLogRatio; ratio > 0 && float64(s.walSinceSnap) < ratio*float64(s.snap.size) &&
		uint64(r.log.lastIndex()+1-r.log.first) <= r.cfg.SnapshotEvery+r.cfg.SnapshotKeep {
		return
	}
	s.snapGap = 0
	s.takeSnapshot()
}

// retakeSnapshot replaces the snapshot file name, found damaged, with a new
// snapshot of the state machine (unless one is being taken already).
func (s *storage) retakeSnapshot(name string) {
	if !s.open || s.snapshotting || s.recv != nil || s.snap.name != name {
		return
	}
	s.r.env.Logf("raft: %d: snapshot %s is damaged; taking a new one", s.r.cfg.ID, name)
	s.takeSnapshot()
}

func (s *storage) takeSnapshot() {
	r := s.r
	meta := snapMeta{Index: r.applied}
	if t, ok := r.log.term(r.applied); ok {
		meta.Term = t
	}
	if r.applied >= r.log.first {
		meta.Zxid = r.log.at(r.applied).Zxid
	} else {
		meta.Zxid = r.log.prevZxid
	}
	s.snapshotting = true
	s.walSinceSnap = 0
	if inc, ok := r.sm.(IncrementalSnapshots); ok {
		s.encoder, s.encMeta = inc.BeginSnapshot(), meta
		s.encTmp = s.path(snapshotName(meta.Index) + ".tmp")
		s.encLen, s.encCRC, s.encWriting, s.encUnsynced = 0, 0, 0, 0
		s.encSeq++
		// A leftover of an aborted attempt must not show through the
		// pieces (a crash's leftovers are removed by recovery).
		s.do(node.RemoveOp(s.encTmp), ignoreErr)
		r.env.SetTimer(timerSnap, 0)
		return
	}
	s.saveSnapshot(meta, encodeSnapshot(meta, r.sm.Snapshot()))
}

// encodeStep advances an incremental snapshot by one step and writes what
// it produced; when the image is complete the header goes in front of it
// and the file is made durable. The next step waits while
// maxSnapshotPiecesInFlight pieces wait for the disk.
func (s *storage) encodeStep() {
	r := s.r
	if s.encoder == nil {
		return
	}
	began := r.env.Now()
	done := s.encoder.Next(r.cfg.SnapshotStep)
	spent := r.env.Now().Sub(began)
	var reuse []byte
	if k := len(s.encSpare); k > 0 {
		reuse, s.encSpare[k-1] = s.encSpare[k-1], nil
		s.encSpare = s.encSpare[:k-1]
	}
	if piece := s.encoder.Take(reuse); len(piece) > 0 {
		seq := s.encSeq
		s.encWriting++
		s.do(node.WriteOp(s.encTmp, int64(snapHeader+s.encLen), piece), func(ev node.Event) {
			if ev.Err != nil {
				r.env.Halt(fmt.Sprintf("raft: snapshot write failed: %v", ev.Err))
				return
			}
			// Written: the disk holds its own copy now.
			if len(s.encSpare) < maxSnapshotPiecesInFlight {
				s.encSpare = append(s.encSpare, piece[:0])
			}
			if seq != s.encSeq {
				return // an aborted encoding's
			}
			s.encWriting--
			if s.encoder != nil && s.encWriting == maxSnapshotPiecesInFlight-1 {
				r.env.SetTimer(timerSnap, 0) // it was waiting for this
			}
		})
		s.encLen += uint64(len(piece))
		s.encCRC = crc32.Update(s.encCRC, castagnoli, piece)
		if s.encUnsynced += len(piece); s.encUnsynced >= r.cfg.SnapshotSyncBytes {
			// The disk runs one op at a time: a sync of the whole image
			// at the end would hold every WAL fsync queued behind it
			// (writes' p99 at 16 outstanding: 56-92 ms with snapshots,
			// 39-47 without).
			s.do(node.SyncOp(s.encTmp), nil)
			s.encUnsynced = 0
		}
	}
	if !done {
		if s.encWriting < maxSnapshotPiecesInFlight {
			r.env.SetTimer(timerSnap, s.snapshotStepGap(spent))
		}
		return
	}
	s.encoder = nil
	s.do(node.WriteOp(s.encTmp, 0, snapshotHeader(s.encMeta, s.encLen, s.encCRC)), nil)
	meta := s.encMeta
	s.commitSnapshot(s.encTmp, meta, int64(snapHeader+s.encLen), func() { s.compacted(meta) })
}

// snapshotStepGap is how long the next encoding step waits after one that
// took spent (Config.SnapshotLoopShare).
func (s *storage) snapshotStepGap(spent time.Duration) time.Duration {
	share := s.r.cfg.SnapshotLoopShare
	if share >= 1 || spent <= 0 {
		return 0
	}
	return time.Duration(float64(spent) * (1/share - 1))
}

// maxSnapshotPiecesInFlight bounds an incremental snapshot's pieces
// waiting for the disk.
const maxSnapshotPiecesInFlight = 2

// abortEncoding drops an incremental snapshot in progress (the state is
// about to be replaced by an installed snapshot).
func (s *storage) abortEncoding() {
	if s.encoder == nil {
		return
	}
	s.encoder.Abort()
	s.encoder = nil
	s.snapshotting = false
	s.r.env.CancelTimer(timerSnap)
	s.do(node.RemoveOp(s.encTmp), ignoreErr)
}

// saveSnapshot writes file (header and image) as the snapshot meta
// describes, then compacts.
func (s *storage) saveSnapshot(meta snapMeta, file []byte) {
	s.writeSnapshot(meta, file, func() { s.compacted(meta) })
}

// compacted follows a snapshot taken here becoming durable: the log before
// it can go.
func (s *storage) compacted(meta snapMeta) {
	r := s.r
	s.snapshotting = false
	s.rotate = true
	if meta.Index <= r.log.snapIndex {
		// A snapshot installed from the leader overtook this one while it
		// was being written: the log already starts after it, and moving
		// snapIndex back would claim entries the log no longer holds (the
		// consensus scenario's leader-completeness check tripped on it,
		// seed 11000345). The installed one's completion, next in the
		// disk's order, replaces this file.
		s.dropOldSegments()
		return
	}
	r.log.snapIndex, r.log.snapTerm, r.log.snapZxid = meta.Index, meta.Term, meta.Zxid
	r.trimLog()
	s.dropOldSegments()
}

// writeSnapshot makes file (header and image) the durable snapshot, then
// calls done.
func (s *storage) writeSnapshot(meta snapMeta, file []byte, done func()) {
	tmp := s.path(snapshotName(meta.Index) + ".tmp")
	s.do(node.WriteOp(tmp, 0, file), nil)
	s.commitSnapshot(tmp, meta, int64(len(file)), done)
}

// commitSnapshot makes the written file tmp, of size bytes, the durable
// snapshot, then calls done.
//
// The rename waits for the sync's completion. The disk worker goes on to
// the ops queued behind a failed one before the loop learns of the failure
// (the shell runs ahead; so does the simulator, half the time): queued
// together, a write or sync of the image that failed was followed by the
// rename all the same, which left a damaged snapshot under its live name,
// and the restarted server abstained, lossy by its own hand (keeper seed
// 349 once the simulator ran ahead: with a wiped server abstaining too, no
// leader). The completions of the image's writes come before the sync's,
// and a failed one halts the server there. Until the rename is queued, WAL
// batches wait if the snapshot voids the older log (walHolds): before, the
// disk's order alone kept a segment that follows such a snapshot from
// being durable before it.
func (s *storage) commitSnapshot(tmp string, meta snapMeta, size int64, done func()) {
	name := snapshotName(meta.Index)
	if meta.VoidsOlderLog {
		s.walHolds++
	}
	s.do(node.SyncOp(tmp), func(ev node.Event) {
		if ev.Err != nil {
			s.r.env.Halt(fmt.Sprintf("raft: snapshot sync failed: %v", ev.Err))
			return
		}
		s.renameSnapshot(tmp, name, meta, size, done)
		if meta.VoidsOlderLog {
			s.walHolds--
			s.flush()
		}
	})
}

// renameSnapshot makes the synced file tmp the durable snapshot name.
func (s *storage) renameSnapshot(tmp, name string, meta snapMeta, size int64, done func()) {
	s.do(node.RenameOp(tmp, s.path(name)), nil)
	s.do(node.SyncDirOp(s.dir), func(ev node.Event) {
		if ev.Err != nil {
			s.r.env.Halt("raft: snapshot syncdir failed: " + ev.Err.Error())
			return
		}
		old := s.snap.name
		s.snap = segSnap{name: name, meta: meta, size: size}
		if old != "" && old != name {
			s.discard(old)
		}
		done()
	})
}

func ignoreErr(node.Event) {}

// dropOldSegments discards segments whose entries are all in the snapshot.
func (s *storage) dropOldSegments() {
	keep := s.segs[:0]
	var gone []string
	for k, seg := range s.segs {
		if k+1 < len(s.segs) && s.segs[k+1].first-1 <= s.snap.meta.Index {
			gone = append(gone, s.path(seg.name))
			continue
		}
		keep = append(keep, seg)
	}
	clear(s.segs[len(keep):])
	s.segs = keep
	if len(gone) > 0 {
		s.trash.Discard(s.dir, gone)
	}
}

// discard hands a file no longer needed to the trash, which renames it to
// <name>.del and, once that is durable, empties it Config.TrimBytes at a
// time (node/trash says why; recovery hands .del files it finds back). The
// trash halts the server if that fails: the file is garbage, but the
// shell's send gate distrusts every later acknowledgement after a failed
// write of any kind (fsyncgate), so going on would leave this server unable
// to vote or acknowledge (the consensus scenario stalled so, seed
// 144220094). The trash truncates only once the rename is durable, or a
// crash could bring back the old name with the bytes cut
// (node/trash's TestCrashNeverDamagesLiveName); raft would survive even that
// (a planted variant was not caught by 3,000 consensus seeds: recovery never
// reads an older snapshot while a newer one is valid, nor needs segments the
// snapshot covers), but a file under its live name must mean its bytes.
func (s *storage) discard(name string) {
	s.trash.Discard(s.dir, []string{s.path(name)})
}

// timerTrim paces the trash: one step per firing.
const timerTrim node.TimerName = "raft/trim"

// readFile reads bytes [off, off+n) of a file in the raft directory.
func (s *storage) readFile(name string, off int64, n int, cb func(data []byte, err error)) {
	s.do(node.ReadOp(s.path(name), off, n), func(ev node.Event) { cb(ev.Data, ev.Err) })
}

// ---- recovery ----

// recover reads the disk: the newest valid snapshot, then every segment,
// replaying entries and hard state; damage is truncated, and damage that may
// have lost acknowledged data makes the server abstain until repaired.
func (s *storage) recover() {
	s.do(node.MkdirOp(s.dir), func(ev node.Event) {
		if ev.Err != nil && !errors.Is(ev.Err, node.ErrExist) {
			s.r.env.Halt("raft: cannot create " + s.dir + ": " + ev.Err.Error())
			return
		}
		// The directory's name must be durable before anything in it, and
		// "it already exists" proves nothing: a killed predecessor may have
		// created it and died before syncing its parent.
		s.do(node.SyncDirOp(node.Dir(s.dir)), nil)
		s.do(node.ListOp(s.dir), s.listed)
	})
}

type recovery struct {
	state    []byte // the state file, if any
	hasState bool
	snaps    []node.DirEntry // newest first
	segs     []segFile
	sizes    map[string]int64
	snapFile []byte          // the snapshot read whole, or
	snapDec  SnapshotDecoder // the snapshot decoded as it was read (IncrementalRestore)
	snapMeta snapMeta
	snapName string
	snapSize int64
	lossy    []string // why data may have been lost

	// replay's progress (loadSegment, replayNext)
	hs    hardState // the newest hard state in the WAL so far
	kept  int       // segments that stay
	cut   int       // segment to truncate at cutAt, or -1
	cutAt int64
	// halted: a replayed record contradicted what was applied
	halted bool
}

func (s *storage) listed(ev node.Event) {
	if ev.Err != nil {
		s.r.env.Halt("raft: cannot list " + s.dir + ": " + ev.Err.Error())
		return
	}
	rc := &recovery{sizes: map[string]int64{}}
	var discarded []string
	for _, e := range ev.Entries {
		rc.sizes[e.Name] = e.Size
		switch {
		case strings.HasSuffix(e.Name, trash.Suffix):
			// Discarded before a crash or shutdown: the trash goes on
			// emptying it (a 1 M-znode snapshot is 200 MB).
			discarded = append(discarded, s.path(e.Name))
		case strings.HasSuffix(e.Name, ".tmp"):
			s.do(node.RemoveOp(s.path(e.Name)), ignoreErr)
		case strings.HasPrefix(e.Name, "snap-"):
			if _, ok := parseSnapshotName(e.Name); ok {
				rc.snaps = append(rc.snaps, e)
			}
		case strings.HasPrefix(e.Name, "wal-"):
			if seq, first, ok := parseSegmentName(e.Name); ok {
				rc.segs = append(rc.segs, segFile{name: e.Name, seq: seq, first: first})
				s.nextSeq = max(s.nextSeq, seq+1)
			}
		}
	}
	if len(discarded) > 0 {
		s.trash.Adopt(s.dir, discarded, false)
	}
	slices.SortFunc(rc.snaps, func(a, b node.DirEntry) int { return strings.Compare(b.Name, a.Name) })
	slices.SortFunc(rc.segs, func(a, b segFile) int { return cmp.Compare(a.seq, b.seq) })
	size, ok := rc.sizes[stateFile]
	if !ok {
		s.loadSnapshot(rc, 0)
		return
	}
	rc.hasState = true
	s.readWhole(s.path(stateFile), size, func(data []byte, err error) {
		if err != nil {
			s.r.env.Halt(fmt.Sprintf("raft: reading %s: %v", stateFile, err))
			return
		}
		rc.state = data
		s.loadSnapshot(rc, 0)
	})
}

// maxReadBytes is the most one read asks for.
const maxReadBytes = 16 << 20

// readWhole reads a file of the given size in chunks the contract allows;
// a file that one read brings whole is that read's buffer, not a copy.
func (s *storage) readWhole(path string, size int64, cb func(data []byte, err error)) {
	var buf []byte
	var next func()
	next = func() {
		if int64(len(buf)) >= size {
			cb(buf, nil)
			return
		}
		n := int(min(size-int64(len(buf)), maxReadBytes))
		s.do(node.ReadOp(path, int64(len(buf)), n), func(ev node.Event) {
			if ev.Err != nil {
				cb(nil, ev.Err)
				return
			}
			if len(ev.Data) == 0 {
				cb(buf, nil) // shorter than listed
				return
			}
			if len(buf) == 0 && int64(len(ev.Data)) >= size {
				cb(ev.Data, nil) // read whole at once: no copy
				return
			}
			if buf == nil {
				buf = make([]byte, 0, size)
			}
			buf = append(buf, ev.Data...)
			next()
		})
	}
	next()
}

func (s *storage) loadSnapshot(rc *recovery, i int) {
	if i == len(rc.snaps) {
		s.loadSegment(rc, 0)
		return
	}
	e := rc.snaps[i]
	if ir, ok := s.r.sm.(IncrementalRestore); ok {
		s.streamSnapshot(rc, i, ir)
		return
	}
	s.readWhole(s.path(e.Name), e.Size, func(data []byte, err error) {
		if err != nil {
			s.r.env.Halt(fmt.Sprintf("raft: reading %s: %v", e.Name, err))
			return
		}
		meta, _, derr := decodeSnapshot(data)
		if idx, _ := parseSnapshotName(e.Name); derr == nil && meta.Index == idx {
			rc.snapFile, rc.snapMeta, rc.snapName, rc.snapSize = data, meta, e.Name, int64(len(data))
			s.loadSegment(rc, 0)
			return
		}
		s.snapshotDamaged(rc, i, derr)
	})
}

// snapshotDamaged records that snapshot i is damaged (data may be lost),
// removes it and goes on to the next older one.
func (s *storage) snapshotDamaged(rc *recovery, i int, why error) {
	name := rc.snaps[i].Name
	rc.lossy = append(rc.lossy, fmt.Sprintf("snapshot %s is damaged (%v)", name, why))
	s.do(node.RemoveOp(s.path(name)), ignoreErr)
	s.loadSnapshot(rc, i+1)
}

// streamSnapshot is loadSnapshot for an IncrementalRestore state machine:
// the header first, then the image a piece at a time into the decoder, its
// checksum computed on the way. A damaged file is judged as loadSnapshot
// judges it; an intact image the decoder refused halts the server, as a
// failed Restore does.
func (s *storage) streamSnapshot(rc *recovery, i int, ir IncrementalRestore) {
	e := rc.snaps[i]
	damaged := func(why string) { s.snapshotDamaged(rc, i, fmt.Errorf("%w: %s", errBadSnapshot, why)) }
	// A file shorter than a header reads short: checkSnapshotHeader says so.
	s.readFile(e.Name, 0, snapHeader, func(h []byte, err error) {
		if err != nil {
			s.r.env.Halt(fmt.Sprintf("raft: reading %s: %v", e.Name, err))
			return
		}
		idx, _ := parseSnapshotName(e.Name)
		meta, sum, herr := checkSnapshotHeader(h, idx, uint64(e.Size))
		if herr != nil {
			s.snapshotDamaged(rc, i, herr)
			return
		}
		size := uint64(e.Size - snapHeader)
		dec := ir.BeginRestore(int64(size))
		var crc uint32
		var decErr error
		off := int64(0)
		var next func()
		next = func() {
			if off == int64(size) {
				if crc != sum {
					damaged("data checksum")
					return
				}
				if decErr != nil {
					s.r.env.Halt(fmt.Sprintf("raft: restoring snapshot %s: %v", e.Name, decErr))
					return
				}
				rc.snapDec, rc.snapMeta, rc.snapName, rc.snapSize = dec, meta, e.Name, e.Size
				s.loadSegment(rc, 0)
				return
			}
			n := int(min(int64(size)-off, int64(s.r.cfg.RestoreReadBytes)))
			s.do(node.ReadOp(s.path(e.Name), snapHeader+off, n), func(ev node.Event) {
				if ev.Err != nil {
					s.r.env.Halt(fmt.Sprintf("raft: reading %s: %v", e.Name, ev.Err))
					return
				}
				if len(ev.Data) == 0 {
					damaged(fmt.Sprintf("ends at data byte %d of %d", off, size))
					return
				}
				crc = crc32.Update(crc, castagnoli, ev.Data)
				if decErr == nil {
					decErr = dec.Write(ev.Data)
				}
				off += int64(len(ev.Data))
				s.r.env.Recycle(ev.Data)
				next()
			})
		}
		next()
	})
}

// loadSegment reads segment k and replays it before reading the next, so
// recovery holds one segment's bytes at a time, not the whole WAL since the
// snapshot (the replayed entries are copies). Segments after one that ends
// the log (damage, a gap) are not read at all.
func (s *storage) loadSegment(rc *recovery, k int) {
	if k == 0 && !s.startReplay(rc) {
		return
	}
	if k == len(rc.segs) {
		s.replayed(rc)
		return
	}
	seg := rc.segs[k]
	s.readWhole(s.path(seg.name), rc.sizes[seg.name], func(data []byte, err error) {
		if err != nil {
			s.r.env.Halt(fmt.Sprintf("raft: reading %s: %v", seg.name, err))
			return
		}
		more := s.replayNext(rc, k, data)
		switch {
		case rc.halted:
		case more:
			s.loadSegment(rc, k+1)
		default:
			s.replayed(rc)
		}
	})
}

// startReplay installs the snapshot (if any) in the state machine, so that
// entries can be applied as the segments after it are replayed.
func (s *storage) startReplay(rc *recovery) bool {
	r := s.r
	r.log.reset(rc.snapMeta.Index, rc.snapMeta.Term, rc.snapMeta.Zxid)
	rc.cut = -1
	if rc.snapName != "" {
		var err error
		if rc.snapDec != nil {
			err = rc.snapDec.Install(rc.snapMeta.Index, rc.snapMeta.Zxid)
		} else {
			_, data, _ := decodeSnapshot(rc.snapFile)
			err = r.sm.Restore(data, rc.snapMeta.Index, rc.snapMeta.Zxid)
		}
		rc.snapDec, rc.snapFile = nil, nil
		if err != nil {
			r.env.Halt(fmt.Sprintf("raft: restoring snapshot %s: %v", rc.snapName, err))
			return false
		}
	}
	r.applied = rc.snapMeta.Index
	return true
}

// applyReplayed applies, as the WAL is replayed, the entries that the
// commit hint replayed so far covers, and lets trimLog drop all but
// SnapshotKeep of them: a restart then holds that many entries and one
// segment's bytes, however long the WAL since the snapshot is (a snapshot
// every few hundred thousand writes on a big tree, SnapshotLogRatio), where
// it used to hold every entry since the snapshot until its leader said what
// every server holds. Those entries are committed: the hint was written with
// the log as replayed up to here, which is intact, and a server never
// rewrites a committed entry (handleAppend panics first; replaySegment and
// replayed halt if a record does). Nothing is applied once damage was
// found: the commit hint is then not trusted at all (replayed).
func (s *storage) applyReplayed(rc *recovery) {
	r := s.r
	l := &r.log
	if len(rc.lossy) > 0 {
		return
	}
	to := min(rc.hs.Commit, l.lastIndex())
	if to <= r.applied {
		return
	}
	if bad := l.verify(); bad != 0 && bad <= to {
		to = bad - 1 // out of order: replayed judges it
	}
	// r.commit stays: replayed writes the state file before the segments
	// read are synced (they may be a killed predecessor's page cache), and
	// a commit hint in it must not outlive the entries it speaks of. With
	// r.commit set here, a power loss kept the state file's hint and lost
	// the newest segment, and the next recovery applied a stale entry
	// under it (consensus seed 144564469).
	r.applyUpTo(to)
	s.durable = l.lastIndex() // as recovery takes it (replayed)
	r.trimLog()
}

// rewritesApplied reports (and halts the server) when a replayed record
// would replace the log from i on, where entries were applied during the
// replay. Before any was, records may cut or restate entries the snapshot
// holds (a conflict resolved before it was taken).
func (s *storage) rewritesApplied(rc *recovery, seg string, i Index) bool {
	r := s.r
	if r.applied <= r.log.snapIndex || i > r.applied {
		return false
	}
	rc.halted = true
	r.env.Halt(fmt.Sprintf("raft: %s rewrites entry %d, below %d committed and applied during recovery: the WAL is damaged in a way its checks missed", seg, i, r.applied))
	return true
}

// replayNext replays segment k, whose bytes are data, and reports whether
// the log may go on into the next segment.
func (s *storage) replayNext(rc *recovery, k int, data []byte) bool {
	r := s.r
	seg := rc.segs[k]
	newest := k == len(rc.segs)-1
	sc := scanSegment(data, seg.seq, newest)
	if newest && len(sc.records) == 0 && !sc.lossy {
		// Zeros or its own fill from the first byte: its header batch
		// never became durable (a crash tore the write that created it,
		// or a halt cut it short), so nothing in it was ever
		// acknowledged. Like a torn tail it is a clean end, not a loss;
		// it is removed below. Judging it lossy made a server abstain for
		// nothing (keeper seed 75001074: with another server abstaining
		// after corruption, no leader could be elected again).
		r.env.Logf("raft: %s holds nothing durable; removing it", seg.name)
		return false
	}
	if !s.replaySegment(rc, seg, sc.records, &rc.hs) {
		return false
	}
	rc.kept = k + 1
	if sc.damaged {
		if sc.lossy {
			rc.lossy = append(rc.lossy, seg.name+": "+sc.why)
		} else {
			r.env.Logf("raft: %s: %s; truncating", seg.name, sc.why)
		}
		rc.cut, rc.cutAt = k, sc.validEnd
		return false
	}
	s.applyReplayed(rc)
	return true
}

// replayed finishes recovery once the segments are replayed: the hard
// state, damage judged, the disk repaired, the rest of what the commit
// hint covers applied.
func (s *storage) replayed(rc *recovery) {
	r := s.r
	l := &r.log
	hs, kept, cut, cutAt := rc.hs, rc.kept, rc.cut, rc.cutAt
	if bad := l.verify(); bad != 0 {
		// The records that should have cut a stale suffix were lost.
		if s.rewritesApplied(rc, "the replayed log", bad) {
			return
		}
		rc.lossy = append(rc.lossy, fmt.Sprintf("the replayed log is out of order at entry %d", bad))
		l.truncateFrom(bad)
	}
	// The hard state is the newest intact copy, from the WAL or the state
	// file: corruption of either must not make the server forget a vote.
	stateLost := !rc.hasState
	if rc.hasState {
		fh, valid := decodeStateFile(rc.state)
		if valid == 0 {
			rc.lossy = append(rc.lossy, "both slots of the state file are damaged")
			stateLost = true
		} else if fh.Seq > hs.Seq {
			hs = fh
		}
		s.fileExists = true
	}
	s.stateSeq = hs.Seq
	r.term, r.vote, r.abstain, r.termUnknown = hs.Term, hs.Vote, hs.Abstain, hs.TermUnknown
	if len(rc.segs) == 0 && rc.snapName == "" && !rc.hasState && r.cfg.Rejoin {
		rc.lossy = append(rc.lossy, "started empty with Rejoin: the disk was wiped")
	}
	if len(rc.lossy) > 0 && stateLost && r.termWitnesses() > 0 {
		// The term this server promised may be gone with the state
		// file: it must learn one at least as high before it answers
		// any leader (see Raft.termUnknown).
		r.termUnknown = true
	}
	if len(rc.lossy) > 0 {
		r.abstain = true
		r.env.Logf("raft: %d may have lost acknowledged data (%s); abstaining from elections until a leader repairs it",
			r.cfg.ID, strings.Join(rc.lossy, "; "))
	}
	// Make the hard state, abstention included, durable before destroying
	// any evidence of damage: a crash in between must not leave a server
	// that neither remembers the damage nor abstains. The destruction is
	// queued once the state file's sync is known to have succeeded: the
	// disk runs the ops queued behind a failed one before the loop learns
	// of the failure, so queued together a failed state file was followed
	// by the removals all the same.
	segs, snapName := slices.Clone(rc.segs), rc.snapName
	s.writeStateFile(func(ev node.Event) {
		if ev.Err != nil {
			r.env.Halt(fmt.Sprintf("raft: recovery's state file %v failed: %v", ev.OpKind, ev.Err))
			return
		}
		s.settleRecovered(segs, kept, cut, cutAt, snapName)
	})
	// The writer waits for all of settleRecovered's syncs (recoverySynced).
	s.inflight = true
	s.segs = append(s.segs[:0], rc.segs[:kept]...)

	if rc.snapName != "" {
		s.snap = segSnap{name: rc.snapName, meta: rc.snapMeta, size: rc.snapSize}
		s.nextSeq = max(s.nextSeq, rc.snapMeta.WALSeq)
	}
	for _, seg := range rc.segs[:kept] {
		if seg.first > rc.snapMeta.Index {
			s.walSinceSnap += rc.sizes[seg.name]
		}
	}
	r.commit = r.applied // what was applied while replaying is committed
	if len(rc.lossy) == 0 {
		// The commit hint speaks of the log it was written with; after
		// damage the log that remains may hold other entries at those
		// indexes, so it is only trusted when nothing was lost.
		r.commit = max(r.applied, min(hs.Commit, l.lastIndex()))
	}
	s.durable = l.lastIndex()

	// Everything written from now on goes into a fresh segment: never
	// append to a file whose tail was damaged.
	s.open = true
	s.rotate = true
	s.saveState()
	r.env.Logf("raft: %d recovered: term %d, vote %d, snapshot %d, log [%d, %d], commit %d, abstain %v, term unknown %v",
		r.cfg.ID, r.term, r.vote, l.snapIndex, l.first, l.lastIndex(), r.commit, r.abstain, r.termUnknown)
	r.ready = true
	r.resetElectionTimer()
	r.role = Follower
	r.applyCommitted()
	for _, p := range r.peers {
		p.conn = r.env.Dial(p.addr)
	}
	r.env.SetTimer(timerTick, r.cfg.Tick)
	s.flush()
	if r.hooks.Ready != nil {
		r.hooks.Ready()
	}
}

// replaySegment applies one segment's records to the log. It returns false
// if the segment cannot be used (it does not continue the log), which is
// data loss.
func (s *storage) replaySegment(rc *recovery, seg segFile, recs []record, hs *hardState) bool {
	l := &s.r.log
	if rc.snapMeta.VoidsOlderLog && seg.seq < rc.snapMeta.WALSeq {
		// Written before an installed snapshot replaced the log: only its
		// hard state still counts.
		for _, rec := range recs {
			if rec.state != nil && rec.state.Seq >= hs.Seq {
				*hs = *rec.state
			}
		}
		return true
	}
	if len(recs) == 0 || recs[0].seg == nil || recs[0].seg.Seq != seg.seq || recs[0].seg.FirstIndex != seg.first {
		rc.lossy = append(rc.lossy, seg.name+": missing or wrong segment header")
		return false
	}
	si := recs[0].seg
	switch {
	case si.FirstIndex > l.lastIndex()+1:
		rc.lossy = append(rc.lossy, fmt.Sprintf("%s starts at %d but the log ends at %d: entries are missing", seg.name, si.FirstIndex, l.lastIndex()))
		return false
	case s.rewritesApplied(rc, seg.name, si.FirstIndex):
		return false
	case si.FirstIndex > l.first-1:
		// A segment starts where its log started: anything after that
		// point from older segments was superseded (a recovery that cut a
		// damaged tail). Its PrevTerm is not checked against the entry
		// before it: a conflict resolved inside this segment may have
		// replaced that entry since.
		l.truncateFrom(si.FirstIndex)
	}
	for _, rec := range recs[1:] {
		switch {
		case rec.state != nil:
			if rec.state.Seq >= hs.Seq {
				*hs = *rec.state
			}
		case rec.entry != nil:
			// An entry record means the log was cut before it and the entry
			// appended, so it supersedes every entry after it written
			// earlier, even when the entry itself is in the snapshot.
			e := *rec.entry
			if s.rewritesApplied(rc, seg.name, e.Index) {
				return false
			}
			if e.Index < l.first {
				l.truncateFrom(l.first)
				continue
			}
			if e.Index > l.lastIndex()+1 {
				rc.lossy = append(rc.lossy, fmt.Sprintf("%s: entry %d after %d", seg.name, e.Index, l.lastIndex()))
				return false
			}
			l.truncateFrom(e.Index)
			e.Data = append([]byte(nil), e.Data...)
			l.appendReplayed(e)
		}
	}
	return true
}
