package demo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"herd/node"
	"herd/node/frame"
)

// Planted bugs a Config may switch on, so tests can prove the checkers catch
// them. Production never sets them.
const (
	BugAckBeforeSync = "ack-before-sync" // acknowledge before the fsync completes
	BugSkipDirSync   = "skip-dir-sync"   // never fsync the directory after creating the log
	BugNoCRC         = "no-crc-check"    // accept records without verifying their checksum
)

// Config configures a demo server.
type Config struct {
	Listen    string        // this server's address
	Peers     []string      // every server's address (this one is skipped)
	Heartbeat time.Duration // ping interval between servers (default 50ms)
	// MaxPending bounds appends waiting for the next group commit; past it
	// the offending connection is closed (backpressure for a slow disk).
	MaxPending int
	Bug        string
	// OnViolation is called when a peer breaks the protocol in a way only a
	// broken transport could cause (a sequence gap on one connection). nil:
	// the server halts.
	OnViolation func(msg string)
	// OnRecovered is called with the log's records once recovery is done.
	OnRecovered func(recs []Record)
}

const (
	timerHeartbeat node.TimerName = "heartbeat"
	timerRedial    node.TimerName = "redial"
	redialDelay                   = 100 * time.Millisecond
)

type connKind uint8

const (
	kindUnknown connKind = iota
	kindClient
	kindPeerIn
	kindPeerOut
)

type conn struct {
	id        node.ConnID
	kind      connKind
	peer      string // kindPeerOut: the address dialed
	connected bool
	in        *frame.Reader
	lastSeq   uint64 // last sequence number received
	sendSeq   uint64 // last sequence number sent (pings)
}

type pendingAppend struct {
	c       node.ConnID
	seq     uint64
	payload []byte
}

// Server is the demo server core.
type Server struct {
	env node.Env
	cfg Config

	ready      bool
	recoverOps map[node.OpID]string // outstanding recovery ops, by purpose
	logSize    int64
	nameSynced bool // the log file's directory entry is known durable
	records    []Record

	conns    map[node.ConnID]*conn
	peersOut map[string]node.ConnID // peer address -> outbound connection

	pending    []pendingAppend
	commitSync node.OpID // the sync of the batch being committed, 0 if none
	batch      []byte
}

// NewServer returns a Factory for demo servers.
func NewServer(cfg Config) node.Factory {
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 50 * time.Millisecond
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 10_000
	}
	return func(env node.Env) node.Machine {
		return &Server{
			env:        env,
			cfg:        cfg,
			recoverOps: make(map[node.OpID]string),
			conns:      make(map[node.ConnID]*conn),
			peersOut:   make(map[string]node.ConnID),
		}
	}
}

// Ready reports whether recovery is complete.
func (s *Server) Ready() bool { return s.ready }

// Records returns the log as this server believes it to be.
func (s *Server) Records() []Record { return s.records }

// PeersConnected counts established outbound heartbeat connections.
func (s *Server) PeersConnected() int {
	n := 0
	for _, id := range s.peersOut { // order-independent: counting
		if c := s.conns[id]; c != nil && c.connected {
			n++
		}
	}
	return n
}

// Step implements node.Machine.
func (s *Server) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		s.recoverOps[s.env.Disk(node.StatOp(logFile))] = "stat"
		s.env.SetTimer(timerHeartbeat, s.cfg.Heartbeat)
		s.dialPeers()
	case node.EvAccepted:
		s.conns[ev.Conn] = &conn{id: ev.Conn, connected: true, in: frame.NewReader(MaxFrame)}
	case node.EvConnected:
		if c := s.conns[ev.Conn]; c != nil {
			c.connected = true
		}
	case node.EvReceived:
		s.received(ev.Conn, ev.Data)
	case node.EvClosed:
		s.closed(ev.Conn)
	case node.EvTimer:
		switch ev.Timer {
		case timerHeartbeat:
			s.heartbeat()
		case timerRedial:
			s.dialPeers()
		}
	case node.EvDiskDone:
		s.diskDone(ev)
	}
}

// ---- recovery ----

func (s *Server) diskDone(ev node.Event) {
	if purpose, ok := s.recoverOps[ev.Op]; ok {
		delete(s.recoverOps, ev.Op)
		s.recovery(purpose, ev)
		return
	}
	if ev.Err != nil {
		// A failed write or fsync leaves the log in an unknown state and,
		// after fsyncgate, no later fsync can be trusted: stop and let
		// recovery sort it out from what is really on disk.
		s.env.Halt(fmt.Sprintf("demo: %v of %s failed: %v", ev.OpKind, logFile, ev.Err))
		return
	}
	if ev.Op == s.commitSync {
		s.commitSync = 0
		s.commit()
	}
}

func (s *Server) recovery(purpose string, ev node.Event) {
	switch purpose {
	case "stat":
		if errors.Is(ev.Err, node.ErrNotExist) {
			s.finishRecovery(false, nil, 0)
			return
		}
		if ev.Err != nil {
			s.env.Halt("demo: recovery: stat: " + ev.Err.Error())
			return
		}
		if ev.Size > node.MaxReadLen {
			s.env.Halt(fmt.Sprintf("demo: recovery: log of %d bytes is beyond what the demo reads", ev.Size))
			return
		}
		s.logSize = ev.Size
		s.recoverOps[s.env.Disk(node.ReadOp(logFile, 0, int(ev.Size)))] = "read"
	case "read":
		if ev.Err != nil {
			s.env.Halt("demo: recovery: read: " + ev.Err.Error())
			return
		}
		recs, valid := ParseLog(ev.Data, s.cfg.Bug != BugNoCRC)
		if valid < s.logSize {
			// A torn or corrupt tail: cut it off before appending after it.
			s.env.Disk(node.TruncateOp(logFile, valid))
		}
		s.finishRecovery(true, recs, valid)
	}
}

func (s *Server) finishRecovery(exists bool, recs []Record, size int64) {
	s.records = recs
	s.logSize = size
	s.nameSynced = false
	if exists {
		// The log may hold data the previous incarnation wrote but never
		// synced (it was killed, not powered off), and its name may not be
		// durable either. Sync both before acknowledging anything after them;
		// acknowledgements wait behind these in the disk's FIFO.
		s.env.Disk(node.SyncOp(logFile))
		if s.cfg.Bug != BugSkipDirSync {
			s.env.Disk(node.SyncDirOp(""))
		}
		s.nameSynced = true
	}
	if s.cfg.Bug == BugSkipDirSync {
		s.nameSynced = true // the bug: trust that creating the file made its name durable
	}
	s.ready = true
	if s.cfg.OnRecovered != nil {
		s.cfg.OnRecovered(recs)
	}
	s.commit()
}

// ---- appends and group commit ----

func (s *Server) received(id node.ConnID, data []byte) {
	c := s.conns[id]
	if c == nil {
		return
	}
	c.in.Feed(data)
	for {
		body, ok, err := c.in.Next()
		if err != nil {
			s.drop(c, err.Error())
			return
		}
		if !ok {
			break
		}
		typ, seq, tail, err := parseFrame(body)
		if err != nil {
			s.drop(c, err.Error())
			return
		}
		if seq != c.lastSeq+1 {
			s.violation(fmt.Sprintf("conn %d: frame seq %d after %d: the stream lost, duplicated or reordered bytes", id, seq, c.lastSeq))
			s.drop(c, "sequence gap")
			return
		}
		c.lastSeq = seq
		switch {
		case typ == msgPing && c.kind != kindClient:
			c.kind = kindPeerIn
		case typ == msgAppend && c.kind != kindPeerIn && len(tail) > 0 && len(tail) <= MaxPayload:
			c.kind = kindClient
			if len(s.pending) >= s.cfg.MaxPending {
				s.drop(c, "too many pending appends")
				return
			}
			s.pending = append(s.pending, pendingAppend{c: id, seq: seq, payload: append([]byte(nil), tail...)})
		default:
			s.drop(c, fmt.Sprintf("unexpected frame type %d", typ))
			return
		}
	}
	s.commit()
}

// commit starts a group commit of everything pending unless one is in flight:
// appends that arrive during an fsync share the next one.
func (s *Server) commit() {
	if !s.ready || s.commitSync != 0 || len(s.pending) == 0 {
		return
	}
	s.batch = s.batch[:0]
	start := s.logSize
	offs := make([]int64, len(s.pending))
	for i, p := range s.pending {
		offs[i] = start + int64(len(s.batch))
		s.batch = appendRecord(s.batch, p.payload)
	}
	s.env.Disk(node.WriteOp(logFile, start, append([]byte(nil), s.batch...)))
	barrier := s.env.Disk(node.SyncOp(logFile))
	s.commitSync = barrier
	if !s.nameSynced {
		// A new file's name is durable only once its directory is synced.
		barrier = s.env.Disk(node.SyncDirOp(""))
		s.commitSync = barrier
		s.nameSynced = true
	}
	for i, p := range s.pending {
		s.records = append(s.records, Record{Off: offs[i], Payload: p.payload})
		ack := appendFrame(nil, msgAppended, p.seq, binary.BigEndian.AppendUint64(nil, uint64(offs[i])))
		if s.cfg.Bug == BugAckBeforeSync {
			s.env.Send(p.c, ack)
		} else {
			s.env.SendAfter(p.c, ack, barrier)
		}
	}
	s.logSize += int64(len(s.batch))
	clear(s.pending)
	s.pending = s.pending[:0]
}

// ---- peers ----

func (s *Server) dialPeers() {
	for _, addr := range s.cfg.Peers {
		if addr == s.cfg.Listen {
			continue
		}
		if _, ok := s.peersOut[addr]; ok {
			continue
		}
		id := s.env.Dial(addr)
		s.peersOut[addr] = id
		s.conns[id] = &conn{id: id, kind: kindPeerOut, peer: addr, in: frame.NewReader(MaxFrame)}
	}
}

func (s *Server) heartbeat() {
	for _, addr := range s.cfg.Peers { // config order: deterministic
		id, ok := s.peersOut[addr]
		if !ok {
			continue
		}
		if c := s.conns[id]; c != nil && c.connected {
			c.sendSeq++
			s.env.Send(id, appendFrame(nil, msgPing, c.sendSeq, nil))
		}
	}
	s.env.SetTimer(timerHeartbeat, s.cfg.Heartbeat)
}

func (s *Server) closed(id node.ConnID) {
	c := s.conns[id]
	if c == nil {
		return
	}
	delete(s.conns, id)
	if c.kind == kindPeerOut {
		delete(s.peersOut, c.peer)
		s.env.SetTimer(timerRedial, redialDelay)
	}
}

func (s *Server) drop(c *conn, why string) {
	s.env.Logf("closing conn %d: %s", c.id, why)
	s.env.Close(c.id)
	s.closed(c.id)
}

func (s *Server) violation(msg string) {
	if s.cfg.OnViolation != nil {
		s.cfg.OnViolation(msg)
		return
	}
	s.env.Halt("demo: " + msg)
}
