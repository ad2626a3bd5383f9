package raft

import "slices"

// ReadIndex (Raft thesis §6.4) gives linearizable reads without writing to
// the log: the leader notes its commit index when the read arrives, confirms
// it is still the leader by a round of heartbeats a majority answers, and
// the read may be served once the server has applied up to that index. A
// follower asks the leader for the index, then waits for its own apply.
//
// Reads are batched into rounds: while a round's heartbeats are out, new
// reads wait for the next round, so the heartbeat traffic does not grow with
// the read rate.

// maxReads bounds every queue of pending reads.
const maxReads = 100_000

type pendingRead struct {
	ctx   uint64
	from  ID // 0: local
	index Index
	seq   uint64 // the heartbeat round that confirms it
	age   int    // ticks waited (remote reads at a follower)
}

type reads struct {
	r       *Raft
	seq     uint64        // latest heartbeat round started (leader)
	next    []pendingRead // leader: waiting for a round to start
	waiting []pendingRead // leader: in the round seq, awaiting a majority
	ready   []pendingRead // confirmed; served once applied >= index
	remote  []pendingRead // follower: asked the leader
}

func (rd *reads) init(r *Raft) { rd.r = r }

// ReadIndex asks for a linearizable read point; Hooks.ReadReady(ctx, ok)
// answers, possibly before ReadIndex returns (a single-server ensemble).
// ok=false means no leader could confirm it: retry later.
func (r *Raft) ReadIndex(ctx uint64) {
	rd := &r.reads
	switch {
	case !r.ready:
		rd.answer(ctx, false)
	case r.role == Leader:
		rd.leaderRequest(ctx, 0)
	case r.leader != 0 && len(rd.remote) < maxReads:
		rd.remote = append(rd.remote, pendingRead{ctx: ctx})
		r.sendNow(r.leader, &message{typ: mReadIndex, ctx: ctx})
	default:
		rd.answer(ctx, false)
	}
}

func (rd *reads) answer(ctx uint64, ok bool) {
	if rd.r.hooks.ReadReady != nil {
		rd.r.hooks.ReadReady(ctx, ok)
	}
}

func (rd *reads) leaderRequest(ctx uint64, from ID) {
	r := rd.r
	if len(rd.next) >= maxReads {
		rd.reply(pendingRead{ctx: ctx, from: from}, false)
		return
	}
	rd.next = append(rd.next, pendingRead{ctx: ctx, from: from, index: r.readFloor()})
	rd.startRound()
}

// startRound begins a heartbeat round for the reads in next, unless one is
// out or the leader has not yet committed an entry of its own term (until it
// has, its commit index may be behind what earlier leaders committed).
func (rd *reads) startRound() {
	r := rd.r
	if len(rd.next) == 0 || len(rd.waiting) > 0 {
		return
	}
	if t, _ := r.log.term(r.commit); t != r.term {
		return
	}
	rd.seq++
	for i := range rd.next {
		rd.next[i].seq = rd.seq
		// A read that waited for the leader's first commit reads at it.
		rd.next[i].index = max(rd.next[i].index, r.readFloor())
	}
	rd.waiting, rd.next = rd.next, rd.waiting[:0]
	if r.quorum == 1 {
		rd.acked()
		return
	}
	for _, p := range r.peers {
		if p.snap == nil {
			r.sendAppend(p, true)
		}
	}
}

// acked releases the round once a majority (the leader included) has
// answered a heartbeat of it.
func (rd *reads) acked() {
	r := rd.r
	if len(rd.waiting) == 0 {
		return
	}
	n := 1
	for _, p := range r.peers {
		if p.readSeq >= rd.seq {
			n++
		}
	}
	if n < r.quorum {
		return
	}
	for _, pr := range rd.waiting {
		if pr.from == 0 {
			rd.ready = append(rd.ready, pr)
		} else {
			rd.reply(pr, true)
		}
	}
	rd.waiting = rd.waiting[:0]
	rd.applied()
	rd.startRound()
}

func (rd *reads) reply(pr pendingRead, ok bool) {
	if pr.from == 0 {
		rd.answer(pr.ctx, ok)
		return
	}
	rd.r.sendNow(pr.from, &message{typ: mReadIndexResp, ctx: pr.ctx, index: pr.index, ok: ok})
}

// readFloor is the index a read arriving now must see: everything any
// server may have committed, and so acknowledged to a client, before it.
// That is the leader's commit index, and past it what the followers may
// have committed among themselves from each other's acknowledgements
// (Raft.peerAcked), for which the leader counts as not holding the entries:
// entries a quorum of followers has been sent. The read waits until the
// entries below the floor commit here too.
func (r *Raft) readFloor() Index {
	var buf [8]Index
	sent := buf[:0]
	for _, p := range r.peers {
		sent = append(sent, p.sentMax)
	}
	if len(sent) < r.quorum {
		return r.commit // too few followers to commit without the leader
	}
	slices.Sort(sent)
	return max(r.commit, sent[len(sent)-r.quorum])
}

// remoteHeld counts the followers' requests a leader holds unanswered.
func (rd *reads) remoteHeld() int {
	n := 0
	for _, q := range [][]pendingRead{rd.next, rd.waiting} {
		for _, pr := range q {
			if pr.from != 0 {
				n++
			}
		}
	}
	return n
}

// commitAdvanced lets deferred reads start once the leader commits in its
// own term.
func (rd *reads) commitAdvanced() { rd.startRound() }

// applied serves ready reads whose index has been applied.
func (rd *reads) applied() {
	kept := rd.ready[:0]
	for _, pr := range rd.ready {
		if pr.index <= rd.r.applied {
			rd.answer(pr.ctx, true)
		} else {
			kept = append(kept, pr)
		}
	}
	clear(rd.ready[len(kept):])
	rd.ready = kept
}

// lostLeadership fails every read the leader was confirming.
func (rd *reads) lostLeadership() {
	for _, pr := range rd.waiting {
		rd.reply(pr, false)
	}
	for _, pr := range rd.next {
		rd.reply(pr, false)
	}
	rd.waiting, rd.next = rd.waiting[:0], rd.next[:0]
}

func (rd *reads) remoteRequest(m *message) {
	r := rd.r
	if r.role != Leader {
		r.sendNow(m.from, &message{typ: mReadIndexResp, ctx: m.ctx, ok: false})
		return
	}
	rd.leaderRequest(m.ctx, m.from)
}

func (rd *reads) remoteAnswer(m *message) {
	for i, pr := range rd.remote {
		if pr.ctx != m.ctx {
			continue
		}
		rd.remote = append(rd.remote[:i], rd.remote[i+1:]...)
		if !m.ok {
			rd.answer(pr.ctx, false)
			return
		}
		rd.ready = append(rd.ready, pendingRead{ctx: pr.ctx, index: m.index})
		rd.applied()
		return
	}
}

// expireRemote fails reads whose leader never answered (it failed, or the
// message was lost with a connection).
func (rd *reads) expireRemote() {
	limit := 2 * rd.r.cfg.ElectionTicks
	kept := rd.remote[:0]
	for _, pr := range rd.remote {
		if pr.age++; pr.age > limit {
			rd.answer(pr.ctx, false)
		} else {
			kept = append(kept, pr)
		}
	}
	clear(rd.remote[len(kept):])
	rd.remote = kept
}
