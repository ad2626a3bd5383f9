// Package keeper is herd's ZooKeeper-compatible coordination service: the
// data tree, sessions, watches, ACLs and the ZooKeeper wire protocol, on the
// replicated log of package raft.
//
// Every write is a log entry applied by every server to its own data tree
// (tree.go, apply.go); reads are served by the server the client talks to,
// from its tree, in request order behind that connection's pending writes;
// sync is a ReadIndex barrier. Watches live on the server holding the
// connection and fire while it applies the entry that triggers them.
package keeper

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"

	"herd/node"
	"herd/node/frame"
	"herd/node/jute"
	"herd/node/raft"
)

const (
	timerTick node.TimerName = "keeper/tick"
	timerReap node.TimerName = "keeper/reap"
	// maxQueued bounds the requests one connection may have waiting; a
	// client that pipelines more is closed (ZooKeeper throttles instead).
	maxQueued = 10_000
	// maxEarly bounds frames a client sends before its session exists.
	maxEarly = 64
	// reapBatch bounds container/TTL deletions proposed per check.
	reapBatch = 1000
	// walSegmentBytes is raft's SegmentBytes for the keeper: a restart
	// reads each segment whole (with its fill, up to 1 MiB more), and at 12
	// MiB that is one read into one buffer; with raft's 64 MiB each segment
	// left about 130 MB of buffers behind it, and with snapshots as far
	// apart as SnapshotLogRatio puts them on a million znodes a restart
	// reads several.
	walSegmentBytes = 12 << 20
)

type connState uint8

const (
	cHandshake connState = iota // waiting for the ConnectRequest (or a four-letter word)
	cPending                    // session being created or validated
	cOpen
	cClosed
)

type conn struct {
	id      node.ConnID
	ip      string
	remote  string
	in      *frame.Reader
	peek    []byte // the first bytes, until we know it is not a four-letter word
	checked bool
	state   connState
	// pendingUntil is when a connect in cPending (a session being created,
	// or a reconnect waiting for a read point) is given up: its entry or
	// read may have been lost with a leader, and a client that waits for
	// the handshake as long as the connection stays open (go-zookeeper
	// 1.0.4 does, for ten read timeouts) must not wait for ever.
	pendingUntil node.Time
	session      int64
	timeout      int32
	hasRO        bool
	passwd       [16]byte
	// key names this connection in the log; seq numbers its writes. The
	// data tree uses both to keep a session's writes in order.
	key   uint64
	seq   uint64
	ids   []jute.ID
	super bool
	queue []*request
	// syncsWaiting counts the queue's syncs whose read point is not yet
	// confirmed; held the writes waiting for them (request.held).
	syncsWaiting, held int
	early              [][]byte
	recv               uint64
	sent               uint64
	// For `cons`, as ZooKeeper reports a connection: established and last
	// response (wall clock ms), last op, cxid and zxid, latencies in ms.
	est, lastResp           int64
	lastOp                  string
	lastCxid                int32
	lastZxid                int64
	lastLat, minLat, maxLat int64
	latSumMs, latCount      int64
}

type request struct {
	xid      int32
	op       int32
	body     []byte // a read, executed when it reaches the head of the queue
	deferred bool
	ready    bool
	// The reply: err and body; the frame is built when it is sent, stamped
	// with the zxid the server has applied then (as ZooKeeper stamps every
	// reply), so a connection never sees zxids go back.
	code     int32
	resp     []byte
	framed   bool  // resp starts with room for the header (bodyEncoder)
	zxid     int64 // used instead of the applied zxid when fixedZxid
	fixed    bool
	write    bool
	deadline node.Time // writes and syncs: give up on the connection after this
	start    node.Time
	close    bool // close the connection after sending (closeSession)
	// held is a write's log entry not yet sent to the log: it waits for
	// an earlier sync of its connection (see write).
	held []byte
}

type pendingKind uint8

const (
	pendCreateSession pendingKind = iota
	pendRequest
)

type pending struct {
	kind pendingKind
	c    *conn
	r    *request
}

type readWait struct {
	c       *conn
	r       *request // a sync
	connect bool     // a reconnect whose session we had not applied yet
}

// Server is a keeper server core.
type Server struct {
	env   node.Env
	cfg   Config
	tcfg  treeConfig
	raft  *raft.Raft
	tree  *Tree
	nonce uint64
	req   uint64 // last request number handed out

	conns     map[node.ConnID]*conn
	bySession map[int64][]*conn
	perIP     map[string]int
	pending   map[uint64]pending
	reads     map[uint64]readWait
	watches   *watches

	leading   bool
	deadlines map[int64]node.Time // the leader's session expiry times
	expiring  map[int64]bool
	touched   map[int64]struct{}

	writeTimeout time.Duration
	stats        serverStats
	late         []lateEvent // BugLateWatch only
	started      node.Time
	ready        bool
}

type serverStats struct {
	received, sent uint64
	latMin, latMax time.Duration
	latSum         time.Duration
	latN           uint64
}

// New returns a Factory for keeper servers.
func New(cfg Config) node.Factory {
	cfg.Defaults()
	return func(env node.Env) node.Machine {
		s := &Server{
			env:       env,
			cfg:       cfg,
			tcfg:      treeConfig{ttlEnabled: cfg.TTLEnabled, enforceQuota: cfg.EnforceQuota, keepEphemerals: cfg.Bug == BugKeepEphemerals},
			tree:      NewTree(0), // reseeded at start
			conns:     make(map[node.ConnID]*conn),
			bySession: make(map[int64][]*conn),
			perIP:     make(map[string]int),
			pending:   make(map[uint64]pending),
			reads:     make(map[uint64]readWait),
			watches:   newWatches(),
			touched:   make(map[int64]struct{}),
			// A forwarded write that has not applied by now was lost with a
			// leader: the client gets ConnectionLoss, as from ZooKeeper when
			// its server loses the quorum.
			writeTimeout: time.Duration(cfg.SyncLimit) * cfg.TickTime,
		}
		s.tree.setConfigData(cfg.Servers)
		var peers []raft.Peer
		for _, sp := range cfg.Servers {
			peers = append(peers, raft.Peer{ID: sp.ID, Addr: sp.PeerAddr()})
		}
		if len(peers) == 0 { // standalone
			peers = []raft.Peer{{ID: cfg.ID, Addr: "standalone"}}
		}
		s.raft = raft.New(env, raft.Config{
			ID: cfg.ID, Peers: peers, Dir: "raft", Tick: cfg.RaftTick, ElectionTicks: cfg.ElectionTicks,
			SnapshotEvery: cfg.SnapshotEvery, SnapshotStep: cfg.SnapshotStep, WALFill: cfg.WALFill, SnapshotSyncBytes: cfg.SnapshotSyncBytes, TrimBytes: cfg.TrimBytes, RestoreReadBytes: cfg.RestoreReadBytes, SnapshotChunk: cfg.SnapshotChunk, SegmentBytes: walSegmentBytes, SnapshotLoopShare: cfg.SnapshotLoopShare, SnapshotLogRatio: max(cfg.SnapshotLogRatio, 0), LogChunk: cfg.LogChunk, LogKeep: cfg.LogKeep, NoAppendCoalescing: cfg.NoAppendCoalescing, NoPeerAcks: cfg.NoPeerAcks, MaxPending: 200_000, Rejoin: cfg.Rejoin, Bug: raftBug(cfg.Bug),
		}, (*stateMachine)(s), raft.Hooks{
			Ready:       s.raftReady,
			ReadReady:   s.readReady,
			RoleChanged: s.roleChanged,
			Prepare:     func(data []byte) []byte { return stampTime(data, s.env.WallClock()) },
			HostMessage: s.hostMessage,
		})
		return s
	}
}

// raftBug passes through planted bugs that belong to the consensus layer.
func raftBug(b string) string {
	switch b {
	case raft.BugAckBeforeDurable, raft.BugCommitOnMinority, raft.BugNoTruncate, raft.BugPeerAckLeader, raft.BugNoDemandSnapshot:
		return b
	}
	return ""
}

// OverdueHandshake reports a connection whose handshake (a session being
// created, or a reconnect waiting for a read point) is still unanswered
// more than slack past its deadline, and by how much: the simulator checks
// that no client is left waiting for ever (the lowest such id, so the
// answer does not depend on map order).
func (s *Server) OverdueHandshake(slack time.Duration) (node.ConnID, time.Duration, bool) {
	now := s.env.Now()
	var id node.ConnID
	var late time.Duration
	found := false
	for _, c := range s.conns { // order-independent: the lowest id wins
		if c.state == cPending && now.Sub(c.pendingUntil) > slack && (!found || c.id < id) {
			id, late, found = c.id, now.Sub(c.pendingUntil), true
		}
	}
	return id, late, found
}

// Tree exposes the data tree (checkers, tools).
func (s *Server) Tree() *Tree { return s.tree }

// Raft exposes the consensus layer.
func (s *Server) Raft() *raft.Raft { return s.raft }

// Step implements node.Machine.
func (s *Server) Step(ev node.Event) {
	if s.raft.Handle(ev) {
		return
	}
	switch ev.Kind {
	case node.EvStart:
		s.nonce = s.env.Rand().Uint64()
		s.tree.reseed(s.treeSeed())
		s.tree.bugFuzzySnapshot = s.cfg.Bug == BugFuzzySnapshot
		s.tree.bugQuotaMulti = s.cfg.Bug == BugQuotaMulti
		s.started = s.env.Now()
		s.raft.Start()
	case node.EvAccepted:
		s.accepted(ev)
	case node.EvReceived:
		if c := s.conns[ev.Conn]; c != nil {
			s.received(c, ev.Data)
			s.raft.Flush()
		}
	case node.EvClosed:
		if c := s.conns[ev.Conn]; c != nil {
			s.forget(c)
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerTick:
			s.tick()
			s.env.SetTimer(timerTick, s.cfg.TickTime/2)
		case timerReap:
			s.reap()
			s.env.SetTimer(timerReap, s.cfg.ContainerCheck)
		}
		s.raft.Flush()
	}
}

func (s *Server) raftReady() {
	s.ready = true
	s.env.SetTimer(timerTick, s.cfg.TickTime/2)
	s.env.SetTimer(timerReap, s.cfg.ContainerCheck)
	if s.cfg.Recovered != nil {
		s.cfg.Recovered()
	}
}

// ---- connections ----

func (s *Server) accepted(ev node.Event) {
	ip := ev.Remote
	if h, _, err := splitHostPort(ev.Remote); err == nil {
		ip = h
	}
	if s.cfg.MaxClientCnxns > 0 && s.perIP[ip] >= s.cfg.MaxClientCnxns {
		s.env.Logf("keeper: too many connections from %s (maxClientCnxns=%d)", ip, s.cfg.MaxClientCnxns)
		s.env.Close(ev.Conn)
		return
	}
	s.perIP[ip]++
	s.conns[ev.Conn] = &conn{
		id: ev.Conn, ip: ip, remote: ev.Remote,
		in:  frame.NewReader(s.cfg.MaxBuffer + 1024),
		key: s.nonce ^ uint64(ev.Conn)*0x9e3779b97f4a7c15,
		ids: []jute.ID{{Scheme: "ip", ID: ip}},
	}
}

// drop closes a connection we decided to end.
func (s *Server) drop(c *conn, why string) {
	if c.state == cClosed {
		return
	}
	if why != "" {
		s.env.Logf("keeper: closing connection %d (session 0x%x): %s", c.id, c.session, why)
	}
	s.env.Close(c.id)
	s.forget(c)
}

// forget removes every trace of a connection.
func (s *Server) forget(c *conn) {
	if c.state == cClosed {
		return
	}
	c.state = cClosed
	delete(s.conns, c.id)
	if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
		delete(s.perIP, c.ip)
	}
	if c.session != 0 {
		list := s.bySession[c.session]
		if i := slices.Index(list, c); i >= 0 {
			list = slices.Delete(list, i, i+1)
		}
		if len(list) == 0 {
			delete(s.bySession, c.session)
		} else {
			s.bySession[c.session] = list
		}
	}
	s.watches.dropConn(c.id)
}

func (s *Server) received(c *conn, data []byte) {
	c.recv++
	if !c.checked {
		// The first four bytes of a new connection may be a four-letter
		// word instead of a frame length.
		c.peek = append(c.peek, data...)
		if len(c.peek) < 4 {
			return
		}
		c.checked = true
		if word := string(c.peek[:4]); isFourLetterShaped(c.peek[:4]) {
			s.fourLetter(c, word)
			return
		}
		data, c.peek = c.peek, nil
	}
	c.in.Feed(data)
	for c.state != cClosed {
		body, ok, err := c.in.Next()
		if err != nil {
			s.drop(c, "len error: "+err.Error())
			return
		}
		if !ok {
			return
		}
		s.stats.received++
		switch c.state {
		case cHandshake:
			s.connect(c, body)
		case cPending:
			if len(c.early) >= maxEarly {
				s.drop(c, "requests before the session was established")
				return
			}
			c.early = append(c.early, append([]byte(nil), body...))
		case cOpen:
			s.request(c, body)
		}
	}
}

// ---- handshake ----

func (s *Server) connect(c *conn, body []byte) {
	var req jute.ConnectRequest
	d := jute.NewDecoder(body)
	req.Decode(d)
	if d.Err() != nil {
		s.drop(c, "bad ConnectRequest: "+d.Err().Error())
		return
	}
	if !s.ready {
		s.drop(c, "recovering")
		return
	}
	if req.LastZxidSeen > s.tree.Zxid() && s.cfg.Bug != BugServeBehind {
		// This server is behind the client: it must not serve it (the
		// client tries another server).
		s.drop(c, fmt.Sprintf("client has seen zxid 0x%x, this server only 0x%x", req.LastZxidSeen, s.tree.Zxid()))
		return
	}
	c.hasRO = req.HasReadOnly
	c.timeout = int32(min(max(time.Duration(req.TimeOut)*time.Millisecond, s.cfg.MinSessionTimeout), s.cfg.MaxSessionTimeout) / time.Millisecond)
	if req.SessionID == 0 {
		for i := 0; i < 16; i += 8 {
			binary.BigEndian.PutUint64(c.passwd[i:], s.env.Rand().Uint64())
		}
		s.req++
		x := txn{kind: txnCreateSession, txnOrigin: txnOrigin{uint64(s.cfg.ID), s.nonce, s.req}, time: s.env.WallClock(), timeout: c.timeout, passwd: c.passwd}
		if err := s.raft.Forward(x.encode()); err != nil {
			s.drop(c, "cannot create a session: "+err.Error())
			return
		}
		s.pending[s.req] = pending{kind: pendCreateSession, c: c}
		c.state = cPending
		c.pendingUntil = s.env.Now().Add(s.writeTimeout)
		return
	}
	// A connect for an existing session ends the session's other
	// connections here, even with a wrong password (as ZooKeeper does).
	for _, old := range slices.Clone(s.bySession[req.SessionID]) {
		s.drop(old, "session reconnected elsewhere")
	}
	c.session = req.SessionID
	copy(c.passwd[:], req.Passwd)
	if s.tree.sessions[req.SessionID] == nil {
		// It may be committed but not applied here yet: read at the
		// leader's commit point before answering that it does not exist.
		s.req++
		s.reads[s.req] = readWait{c: c, connect: true}
		c.state = cPending
		c.pendingUntil = s.env.Now().Add(s.writeTimeout)
		s.raft.ReadIndex(s.req)
		return
	}
	s.resume(c)
}

// resume answers a reconnect once the session is known or known gone.
func (s *Server) resume(c *conn) {
	sess := s.tree.sessions[c.session]
	if sess == nil || sess.passwd != c.passwd {
		s.sendConnectResponse(c, 0, 0, [16]byte{})
		s.drop(c, "unknown or expired session, or wrong password")
		return
	}
	s.open(c, c.session)
}

func (s *Server) open(c *conn, id int64) {
	c.session = id
	c.state = cOpen
	c.est = s.env.WallClock()
	c.lastOp, c.lastCxid, c.lastZxid = "NA", -1, -1
	s.bySession[id] = append(s.bySession[id], c)
	s.touch(id)
	s.sendConnectResponse(c, c.timeout, id, c.passwd)
	early := c.early
	c.early = nil
	for _, b := range early {
		if c.state != cOpen {
			return
		}
		s.request(c, b)
	}
}

func (s *Server) sendConnectResponse(c *conn, timeout int32, id int64, passwd [16]byte) {
	r := jute.ConnectResponse{TimeOut: timeout, SessionID: id, Passwd: passwd[:], HasReadOnly: c.hasRO}
	s.sendRecord(c, &r)
}

// sendRecord frames and sends one record outside the reply queue.
func (s *Server) sendRecord(c *conn, rec interface{ Encode(*jute.Encoder) }) {
	e := &jute.Encoder{B: make([]byte, 4, 64)}
	rec.Encode(e)
	binary.BigEndian.PutUint32(e.B, uint32(len(e.B)-4))
	s.env.Send(c.id, e.B)
	c.sent++
	s.stats.sent++
}

// ---- requests ----

// replyFrame builds a reply: the header, and the body only on success.
func replyFrame(xid int32, zxid int64, code int32, body []byte) []byte {
	e := &jute.Encoder{B: make([]byte, 4, 20+len(body))}
	h := jute.ReplyHeader{Xid: xid, Zxid: zxid, Err: code}
	h.Encode(e)
	if code == jute.ErrOK {
		e.B = append(e.B, body...)
	}
	binary.BigEndian.PutUint32(e.B, uint32(len(e.B)-4))
	return e.B
}

// stampReply writes the length prefix and a success ReplyHeader into the
// room bodyEncoder left in front of a body, making it the frame.
func stampReply(b []byte, xid int32, zxid int64) []byte {
	if len(b) < replyHeaderLen {
		panic(fmt.Sprintf("keeper: framed reply body of %d bytes has no header room", len(b)))
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-4))
	// Encoded into the room itself: appending within b's capacity from
	// offset 4 overwrites exactly the 16 header bytes.
	e := jute.Encoder{B: b[4:4]}
	h := jute.ReplyHeader{Xid: xid, Zxid: zxid, Err: jute.ErrOK}
	h.Encode(&e)
	return b
}

func (s *Server) request(c *conn, body []byte) {
	if len(body) < 8 {
		s.drop(c, "short request")
		return
	}
	var h jute.RequestHeader
	h.Decode(jute.NewDecoder(body))
	rest := body[8:]
	s.touch(c.session)
	if len(c.queue) >= maxQueued {
		s.drop(c, "too many outstanding requests")
		return
	}
	now := s.env.Now()
	switch h.Type {
	case jute.OpPing:
		s.enqueue(c, &request{xid: h.Xid, op: h.Type, ready: true, start: now})
	case jute.OpAuth:
		s.auth(c, h.Xid, rest)
	case jute.OpExists, jute.OpGetData, jute.OpGetACL, jute.OpGetChildren, jute.OpGetChildren2,
		jute.OpGetEphemerals, jute.OpGetAllChildrenNumber, jute.OpMultiRead, jute.OpWhoAmI,
		jute.OpCheckWatches, jute.OpRemoveWatches, jute.OpAddWatch, jute.OpSetWatches, jute.OpSetWatches2:
		s.enqueue(c, &request{xid: h.Xid, op: h.Type, body: append([]byte(nil), rest...), deferred: true, start: now})
	case jute.OpSync:
		var req jute.SyncRequest
		if jute.Unmarshal(rest, &req) != nil {
			s.drop(c, "bad sync request")
			return
		}
		r := &request{xid: h.Xid, op: h.Type, body: append([]byte(nil), rest...), start: now, deadline: now.Add(s.writeTimeout)}
		s.req++
		s.reads[s.req] = readWait{c: c, r: r}
		c.syncsWaiting++
		s.enqueue(c, r)
		if s.cfg.Bug == BugStaleSync {
			s.readReady(s.req, true)
			return
		}
		s.raft.ReadIndex(s.req)
	case jute.OpCreate, jute.OpCreate2, jute.OpCreateContainer, jute.OpCreateTTL, jute.OpDelete,
		jute.OpSetData, jute.OpSetACL, jute.OpMulti, jute.OpCloseSession:
		s.write(c, h, rest, now)
	case jute.OpCheck:
		// A check outside a multi makes ZooKeeper 3.8 drop the connection.
		s.drop(c, "check outside multi")
	case jute.OpReconfig:
		s.enqueue(c, &request{xid: h.Xid, op: h.Type, ready: true, start: now, code: jute.ErrReconfigDisabled})
	default:
		// ZooKeeper answers an unknown op with zxid -1.
		s.enqueue(c, &request{xid: h.Xid, op: h.Type, ready: true, start: now, code: jute.ErrUnimplemented, zxid: -1, fixed: true})
	}
}

// write checks a write request's shape and sends it to the log.
func (s *Server) write(c *conn, h jute.RequestHeader, body []byte, now node.Time) {
	if !validWrite(h.Type, body) {
		s.drop(c, fmt.Sprintf("malformed %s request", opName(h.Type)))
		return
	}
	if len(body) > s.cfg.MaxBuffer {
		s.drop(c, "request larger than jute.maxbuffer")
		return
	}
	c.seq++
	s.req++
	x := txn{kind: txnRequest, txnOrigin: txnOrigin{uint64(s.cfg.ID), s.nonce, s.req},
		session: c.session, conn: c.key, seq: c.seq, time: s.env.WallClock(),
		ids: c.ids, super: c.super, op: h.Type, body: body}
	r := &request{xid: h.Xid, op: h.Type, write: true, start: now, deadline: now.Add(s.writeTimeout), close: h.Type == jute.OpCloseSession}
	s.pending[s.req] = pending{kind: pendRequest, c: c, r: r}
	if c.syncsWaiting > 0 {
		// Reads queued behind a sync execute when its read point is
		// confirmed, against the tree as it is then; a later write of the
		// connection must not be applied before them, or a read would see
		// a write its client sent after it (the keeper scenario caught a
		// getData showing a node that the setData sent after it had found
		// missing). So the write waits for the sync, as ZooKeeper's
		// per-session request order makes it.
		r.held = x.encode()
		c.held++
		s.enqueue(c, r)
		return
	}
	s.enqueue(c, r)
	s.forward(c, x.encode())
}

// forward sends a write's entry to the log.
func (s *Server) forward(c *conn, entry []byte) {
	if err := s.raft.Forward(entry); err != nil {
		// No leader to take it: the outcome is "connection loss", and the
		// client retries once the ensemble has a leader again.
		s.drop(c, "no leader: "+err.Error())
	}
}

// releaseHeld forwards the held writes no waiting sync precedes, in order.
// It runs once the reads before them have executed (pump stops at the
// first request not ready, and a held write is not).
func (s *Server) releaseHeld(c *conn) {
	if c.held == 0 {
		return
	}
	for _, r := range c.queue {
		if c.state != cOpen {
			return
		}
		switch {
		case r.op == jute.OpSync && !r.ready:
			return
		case r.held != nil:
			entry := r.held
			r.held = nil
			c.held--
			s.forward(c, entry)
		}
	}
}

// validWrite decodes a write request to check it is well formed before it
// reaches the log (where it is decoded again, on every server).
func validWrite(op int32, body []byte) bool {
	var rec jute.Record
	switch op {
	case jute.OpCreate, jute.OpCreate2, jute.OpCreateContainer:
		rec = &jute.CreateRequest{}
	case jute.OpCreateTTL:
		rec = &jute.CreateTTLRequest{}
	case jute.OpDelete:
		rec = &jute.DeleteRequest{}
	case jute.OpSetData:
		rec = &jute.SetDataRequest{}
	case jute.OpSetACL:
		rec = &jute.SetACLRequest{}
	case jute.OpMulti:
		d := jute.NewDecoder(body)
		_, err := jute.DecodeMulti(d, false)
		return err == nil && d.Done() == nil
	case jute.OpCloseSession:
		return true
	default:
		return false
	}
	return jute.Unmarshal(body, rec) == nil
}

func (s *Server) enqueue(c *conn, r *request) {
	c.queue = append(c.queue, r)
	s.pump(c)
}

// pump sends replies from the head of the queue while they are ready,
// executing reads when they reach the head: a read sees every earlier write
// of its connection.
func (s *Server) pump(c *conn) {
	for len(c.queue) > 0 && c.state == cOpen {
		r := c.queue[0]
		if r.deferred {
			s.read(c, r)
			if c.state != cOpen {
				return
			}
			r.deferred = false
			r.ready = true
		}
		if !r.ready {
			s.releaseHeld(c)
			return
		}
		c.queue[0] = nil
		c.queue = c.queue[1:]
		zxid := s.tree.Zxid()
		if r.fixed {
			zxid = r.zxid
		}
		if r.framed && r.code == jute.ErrOK {
			s.env.Send(c.id, stampReply(r.resp, r.xid, zxid))
		} else {
			s.env.Send(c.id, replyFrame(r.xid, zxid, r.code, r.resp))
		}
		c.sent++
		s.stats.sent++
		lat := s.env.Now().Sub(r.start)
		s.latency(lat)
		s.connStats(c, r, zxid, lat)
		if r.close {
			s.drop(c, "")
			return
		}
	}
}

// connStats records a reply for `cons`, as ZooKeeper's
// ServerCnxn.updateStatsForResponse does.
func (s *Server) connStats(c *conn, r *request, zxid int64, lat time.Duration) {
	c.lastOp = consOpName(r.op)
	if r.xid >= 0 {
		c.lastCxid = r.xid
	}
	c.lastZxid = zxid
	c.lastResp = s.env.WallClock()
	ms := lat.Milliseconds()
	c.lastLat = ms
	if c.latCount == 0 || ms < c.minLat {
		c.minLat = ms
	}
	c.maxLat = max(c.maxLat, ms)
	c.latSumMs += ms
	c.latCount++
}

func (s *Server) latency(d time.Duration) {
	st := &s.stats
	if st.latN == 0 || d < st.latMin {
		st.latMin = d
	}
	st.latMax = max(st.latMax, d)
	st.latSum += d
	st.latN++
}

// auth handles an auth packet at once, outside the queue (as ZooKeeper
// does): it changes the identities of every later request.
func (s *Server) auth(c *conn, xid int32, body []byte) {
	var p jute.AuthPacket
	if jute.Unmarshal(body, &p) != nil {
		s.drop(c, "bad auth packet")
		return
	}
	if p.Scheme != "digest" {
		s.sendFrame(c, replyFrame(xid, 0, jute.ErrAuthFailed, nil))
		s.drop(c, "unsupported auth scheme "+p.Scheme)
		return
	}
	user, pw, ok := strings.Cut(string(p.Auth), ":")
	if !ok {
		s.sendFrame(c, replyFrame(xid, 0, jute.ErrAuthFailed, nil))
		s.drop(c, "malformed digest credentials")
		return
	}
	id := jute.DigestID(user, pw)
	if s.cfg.SuperDigest != "" && id == s.cfg.SuperDigest {
		c.super = true
	}
	if !slices.Contains(c.ids, jute.ID{Scheme: "digest", ID: id}) {
		c.ids = append(slices.Clone(c.ids), jute.ID{Scheme: "digest", ID: id})
	}
	s.sendFrame(c, replyFrame(xid, 0, jute.ErrOK, nil))
}

func (s *Server) sendFrame(c *conn, f []byte) {
	s.env.Send(c.id, f)
	c.sent++
	s.stats.sent++
}

// ---- applying the log ----

// stateMachine is the Server seen by raft.
type stateMachine Server

func (sm *stateMachine) Apply(e *raft.Entry) { (*Server)(sm).apply(e) }

func (sm *stateMachine) Snapshot() []byte { return sm.tree.Snapshot() }

// BeginSnapshot makes snapshots incremental (raft.IncrementalSnapshots):
// a large tree is encoded a slice at a time between events.
func (sm *stateMachine) BeginSnapshot() raft.SnapshotEncoder {
	enc := sm.tree.beginSnapshot()
	if sm.cfg.SnapshotCheck != nil {
		enc.check = &snapshotCheck{want: Canonical(sm.tree), report: sm.cfg.SnapshotCheck}
	}
	return enc
}

func (sm *stateMachine) Restore(data []byte, index raft.Index, zxid raft.Zxid) error {
	t, err := RestoreTree(data, (*Server)(sm).treeSeed())
	if err != nil {
		return err
	}
	return sm.install(t, zxid)
}

// BeginRestore implements raft.IncrementalRestore: a snapshot, read at a
// restart or received from the leader, is decoded as it comes, never held
// whole.
func (sm *stateMachine) BeginRestore(size int64) raft.SnapshotDecoder {
	return &treeRestore{sm: sm, d: newTreeDecoder((*Server)(sm).treeSeed(), size)}
}

// treeRestore is a raft.SnapshotDecoder into this server's tree.
type treeRestore struct {
	sm *stateMachine
	d  *treeDecoder
}

func (r *treeRestore) Write(p []byte) error { return r.d.Write(p) }

func (r *treeRestore) Install(index raft.Index, zxid raft.Zxid) error {
	t, err := r.d.finish()
	if err != nil {
		return err
	}
	return r.sm.install(t, zxid)
}

// install makes a restored tree the server's.
func (sm *stateMachine) install(t *Tree, zxid raft.Zxid) error {
	t.bugFuzzySnapshot = sm.cfg.Bug == BugFuzzySnapshot
	t.bugQuotaMulti = sm.cfg.Bug == BugQuotaMulti
	if sm.cfg.Bug == BugQuotaForgotten {
		t.quotas = nil
	}
	if t.zxid != int64(zxid) {
		return fmt.Errorf("keeper: snapshot holds zxid 0x%x, raft says 0x%x", t.zxid, zxid)
	}
	sm.tree = t
	(*Server)(sm).treeReplaced()
	return nil
}

// treeReplaced runs when a snapshot replaced the tree, which happens while
// clients are connected when the leader sends one to a follower that fell
// too far behind (paused, partitioned). Their watches, pending writes and
// the zxids they saw belong to the old tree, and the changes in between
// fired no events here: a client could see a created node before its watch
// fired (the keeper scenario caught it, seed 59000357 --swarm=false). As a
// ZooKeeper follower that resyncs from a snapshot does, close every client
// connection: clients reconnect with their last zxid and watches, and
// setWatches sends the events they missed before any reply.
func (s *Server) treeReplaced() {
	ids := make([]node.ConnID, 0, len(s.conns))
	for id := range s.conns { // order-independent: sorted below
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		s.drop(s.conns[id], "the tree was replaced by a snapshot from the leader")
	}
	// Writes still pending here either are in the snapshot (never applied
	// here) or have no connection to answer any more.
	clear(s.pending)
}

// treeSeed is the hash seed of the tree's children sets: random per server
// incarnation (derived from the nonce, so no extra draw from the stream).
func (s *Server) treeSeed() uint64 { return mixSeed(s.nonce, 0x7ee5eed) }

func (s *Server) mine(o txnOrigin) bool { return o.server == uint64(s.cfg.ID) && o.nonce == s.nonce }

func (s *Server) apply(e *raft.Entry) {
	out := s.tree.apply(e, &s.tcfg, s.mine)
	// Watches first: an event must reach its client before any reply that
	// reveals the change.
	for _, ev := range out.events {
		for _, id := range s.watches.trigger(ev, s.cfg.Bug == BugDoubleWatch) {
			if c := s.conns[id]; c != nil && c.state == cOpen {
				if s.cfg.Bug == BugLateWatch {
					s.late = append(s.late, lateEvent{id, ev})
					continue
				}
				s.notify(c, ev)
			}
		}
	}
	if id := out.sessionCreated; id != 0 && s.leading {
		if sess := s.tree.sessions[id]; sess != nil {
			s.deadlines[id] = s.env.Now().Add(time.Duration(sess.timeout) * time.Millisecond)
		}
	}
	if id := out.sessionClosed; id != 0 {
		delete(s.deadlines, id)
		delete(s.expiring, id)
		for _, c := range slices.Clone(s.bySession[id]) {
			if out.txn.kind == txnRequest && s.mine(out.txn.txnOrigin) {
				if p, ok := s.pending[out.txn.req]; ok && p.c == c {
					continue // the closing connection: closed after its reply
				}
			}
			s.drop(c, "session closed")
		}
	}
	if !s.mine(out.txn.txnOrigin) {
		return
	}
	p, ok := s.pending[out.txn.req]
	if !ok {
		return
	}
	delete(s.pending, out.txn.req)
	c := p.c
	if c.state == cClosed {
		return
	}
	switch p.kind {
	case pendCreateSession:
		s.open(c, out.sessionCreated)
	case pendRequest:
		if out.fenced {
			s.drop(c, fmt.Sprintf("write refused to keep the session's order (%s)", jute.ErrName(out.err)))
			return
		}
		p.r.code, p.r.resp = out.err, out.resp
		p.r.ready = true
		s.pump(c)
	}
}

func (s *Server) notify(c *conn, ev event) {
	e := &jute.Encoder{B: make([]byte, 4, 32+len(ev.path))}
	h := jute.ReplyHeader{Xid: jute.XidNotification, Zxid: -1, Err: jute.ErrOK}
	h.Encode(e)
	w := jute.WatcherEvent{Type: ev.typ, State: jute.StateSyncConnected, Path: ev.path}
	w.Encode(e)
	binary.BigEndian.PutUint32(e.B, uint32(len(e.B)-4))
	s.sendFrame(c, e.B)
}

func (s *Server) readReady(ctx uint64, ok bool) {
	w, found := s.reads[ctx]
	if !found {
		return
	}
	delete(s.reads, ctx)
	c := w.c
	if c.state == cClosed {
		return
	}
	if w.connect {
		if !ok {
			s.drop(c, "no leader to confirm the session")
			return
		}
		s.resume(c)
		return
	}
	if !ok {
		s.drop(c, "sync: no leader confirmed the read point")
		return
	}
	var req jute.SyncRequest
	_ = jute.Unmarshal(w.r.body, &req)
	w.r.code, w.r.resp = jute.ErrOK, jute.Marshal(&jute.SyncResponse{Path: req.Path})
	w.r.ready = true
	c.syncsWaiting--
	s.pump(c)
}

// ---- sessions: liveness and expiry ----

// touch records that a session is alive. The leader decides expiry;
// followers tell it which sessions they heard from.
func (s *Server) touch(id int64) {
	if id == 0 {
		return
	}
	if s.leading {
		s.refresh(id)
		return
	}
	s.touched[id] = struct{}{}
}

func (s *Server) refresh(id int64) {
	if sess := s.tree.sessions[id]; sess != nil {
		s.deadlines[id] = s.env.Now().Add(time.Duration(sess.timeout) * time.Millisecond)
	}
}

func (s *Server) roleChanged(role raft.Role, term raft.Term, leader raft.ID) {
	lead := role == raft.Leader
	if lead == s.leading {
		return
	}
	s.leading = lead
	s.deadlines = nil
	s.expiring = nil
	if !lead {
		return
	}
	// A new leader gives every session a full timeout, as ZooKeeper's does:
	// it does not know when the old leader last heard from them.
	s.deadlines = make(map[int64]node.Time, len(s.tree.sessions))
	s.expiring = make(map[int64]bool)
	for id := range s.tree.sessions { // order-independent: fills a map
		s.refresh(id)
	}
	for id := range s.touched { // order-independent: fills a map
		s.refresh(id)
	}
	clear(s.touched)
}

func (s *Server) hostMessage(from raft.ID, data []byte) {
	if !s.leading {
		return
	}
	for len(data) >= 8 {
		s.refresh(int64(binary.BigEndian.Uint64(data)))
		data = data[8:]
	}
}

type lateEvent struct {
	c  node.ConnID
	ev event
}

func (s *Server) tick() {
	now := s.env.Now()
	for _, l := range s.late {
		if c := s.conns[l.c]; c != nil && c.state == cOpen {
			s.notify(c, l.ev)
		}
	}
	s.late = s.late[:0]
	// Requests and handshakes that waited too long: their write, sync or
	// session was lost with a leader. Closing the connection tells the
	// client to try again (ZooKeeper closes its clients' connections
	// when it loses its leader).
	var stale []*conn
	for _, c := range s.conns { // order-independent: collected and sorted below
		switch {
		case c.state == cPending && now > c.pendingUntil && s.cfg.Bug != BugStuckConnect:
			stale = append(stale, c)
		case len(c.queue) > 0 && c.queue[0].deadline != 0 && now > c.queue[0].deadline:
			stale = append(stale, c)
		}
	}
	slices.SortFunc(stale, func(a, b *conn) int { return int(a.id) - int(b.id) })
	for _, c := range stale {
		if c.state == cPending {
			s.drop(c, "handshake timed out (no leader created or confirmed the session)")
		} else {
			s.drop(c, "request timed out (no leader applied it)")
		}
	}
	// What closed connections still wait for is forgotten: an entry lost
	// with a leader never applies, and a read whose answer comes has
	// nobody to serve; either would otherwise be held for ever.
	for req, p := range s.pending { // order-independent: deletes only
		if p.c.state == cClosed {
			delete(s.pending, req)
		}
	}
	for req, w := range s.reads { // order-independent: deletes only
		if w.c.state == cClosed {
			delete(s.reads, req)
		}
	}
	if !s.leading {
		if len(s.touched) > 0 {
			if leader, _ := s.raft.Leader(); leader != 0 {
				ids := make([]int64, 0, len(s.touched))
				for id := range s.touched { // order-independent: sorted below
					ids = append(ids, id)
				}
				slices.Sort(ids)
				buf := make([]byte, 0, 8*len(ids))
				for _, id := range ids {
					buf = binary.BigEndian.AppendUint64(buf, uint64(id))
				}
				s.raft.SendHost(leader, buf)
				clear(s.touched)
			}
		}
		return
	}
	var expired []int64
	for id, deadline := range s.deadlines { // order-independent: sorted below
		if now > deadline && !s.expiring[id] {
			expired = append(expired, id)
		}
	}
	slices.Sort(expired)
	for _, id := range expired {
		s.expiring[id] = true
		x := txn{kind: txnCloseSession, session: id}
		if _, _, err := s.raft.Propose(x.encode()); err != nil {
			delete(s.expiring, id)
		}
	}
}

// reap proposes the deletion of empty containers and expired TTL nodes.
func (s *Server) reap() {
	if !s.leading {
		return
	}
	now := s.env.WallClock()
	paths := s.tree.expired(now)
	for _, p := range paths[:min(len(paths), reapBatch)] {
		x := txn{kind: txnReap, path: p, time: now}
		_, _, _ = s.raft.Propose(x.encode())
	}
}
