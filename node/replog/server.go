package replog

import (
	"encoding/binary"
	"time"

	"herd/node"
	"herd/node/frame"
	"herd/node/raft"
)

// ServerConfig configures a replog server.
type ServerConfig struct {
	Raft       raft.Config
	ClientAddr string // where clients connect
	// OnApply sees every entry this server applies (checkers).
	OnApply func(e *raft.Entry, hash uint64)
	// OnRole sees every role change, OnCommit every commit a leader makes
	// (checkers).
	OnRole   func(role raft.Role, term raft.Term, leader raft.ID)
	OnCommit func(term raft.Term, index raft.Index)
	// OnReady is called when recovery is done.
	OnReady func()
	// StreamedRestore: the chain takes its snapshots in pieces
	// (raft.IncrementalRestore), as the keeper's tree does, so that the
	// consensus scenario exercises raft's streamed recovery and installs
	// too.
	StreamedRestore bool
}

const (
	timerExpire node.TimerName = "replog/expire"
	// requestLife bounds how long a server remembers a client request whose
	// entry never applied (its proposal was lost with a leader).
	requestLife = 10 * time.Second
	maxPending  = 100_000
)

type pendingReq struct {
	conn node.ConnID
	id   uint64
	at   node.Time
}

// Server is a replog server core.
type Server struct {
	env   node.Env
	cfg   ServerConfig
	raft  *raft.Raft
	chain *Chain
	// nonce tells this incarnation's proposals from an earlier one's when
	// they come back through the log.
	nonce   uint64
	nextReq uint64
	pending map[uint64]pendingReq // by request number: proposals in flight
	reads   map[uint64]pendingReq // by read context
	clients map[node.ConnID]*frame.Reader
	out     []byte
}

// NewServer returns a Factory for replog servers.
func NewServer(cfg ServerConfig) node.Factory {
	return func(env node.Env) node.Machine {
		s := &Server{
			env:     env,
			cfg:     cfg,
			pending: make(map[uint64]pendingReq),
			reads:   make(map[uint64]pendingReq),
			clients: make(map[node.ConnID]*frame.Reader),
		}
		s.chain = &Chain{OnApply: s.applied}
		var sm raft.StateMachine = s.chain
		if cfg.StreamedRestore {
			sm = streamedChain{s.chain}
		}
		s.raft = raft.New(env, cfg.Raft, sm, raft.Hooks{
			Ready:       cfg.OnReady,
			ReadReady:   s.readReady,
			RoleChanged: cfg.OnRole,
			Committed:   cfg.OnCommit,
		})
		return s
	}
}

// Raft exposes the consensus layer (status for checkers and tools).
func (s *Server) Raft() *raft.Raft { return s.raft }

// Chain exposes the state machine.
func (s *Server) Chain() *Chain { return s.chain }

// Step implements node.Machine.
func (s *Server) Step(ev node.Event) {
	if s.raft.Handle(ev) {
		return
	}
	switch ev.Kind {
	case node.EvStart:
		s.nonce = s.env.Rand().Uint64()
		s.raft.Start()
		s.env.SetTimer(timerExpire, requestLife)
	case node.EvAccepted:
		s.clients[ev.Conn] = frame.NewReader(MaxFrame)
	case node.EvReceived:
		if in := s.clients[ev.Conn]; in != nil {
			s.received(ev.Conn, in, ev.Data)
			s.raft.Flush()
		}
	case node.EvClosed:
		delete(s.clients, ev.Conn)
	case node.EvTimer:
		if ev.Timer == timerExpire {
			s.expire()
			s.env.SetTimer(timerExpire, requestLife)
		}
	}
}

func (s *Server) received(c node.ConnID, in *frame.Reader, data []byte) {
	in.Feed(data)
	for {
		body, ok, err := in.Next()
		if err != nil || (ok && len(body) < 9) {
			s.env.Close(c)
			delete(s.clients, c)
			return
		}
		if !ok {
			return
		}
		typ, id := body[0], binary.BigEndian.Uint64(body[1:9])
		switch typ {
		case reqPropose:
			s.propose(c, id, body[9:])
		case reqRead:
			s.nextReq++
			s.reads[s.nextReq] = pendingReq{conn: c, id: id, at: s.env.Now()}
			s.raft.ReadIndex(s.nextReq)
		default:
			s.env.Close(c)
			delete(s.clients, c)
			return
		}
	}
}

func (s *Server) propose(c node.ConnID, id uint64, payload []byte) {
	if len(s.pending) >= maxPending {
		s.env.Send(c, appendFailed(nil, id, "server busy"))
		return
	}
	s.nextReq++
	data := binary.BigEndian.AppendUint64(make([]byte, 0, 24+len(payload)), uint64(s.cfg.Raft.ID))
	data = binary.BigEndian.AppendUint64(data, s.nonce)
	data = binary.BigEndian.AppendUint64(data, s.nextReq)
	data = append(data, payload...)
	if err := s.raft.Forward(data); err != nil {
		s.env.Send(c, appendFailed(nil, id, err.Error()))
		return
	}
	s.pending[s.nextReq] = pendingReq{conn: c, id: id, at: s.env.Now()}
}

// applied answers the client whose proposal this entry is, if it came
// through this incarnation of this server.
func (s *Server) applied(e *raft.Entry, hash uint64) {
	if s.cfg.OnApply != nil {
		s.cfg.OnApply(e, hash)
	}
	if e.Type != raft.EntryNormal || len(e.Data) < 24 {
		return
	}
	if raft.ID(binary.BigEndian.Uint64(e.Data)) != s.cfg.Raft.ID || binary.BigEndian.Uint64(e.Data[8:]) != s.nonce {
		return
	}
	req := binary.BigEndian.Uint64(e.Data[16:])
	p, ok := s.pending[req]
	if !ok {
		return
	}
	delete(s.pending, req)
	if _, open := s.clients[p.conn]; open {
		s.env.Send(p.conn, appendOK(nil, p.id, e.Index, e.Zxid, hash))
	}
}

func (s *Server) readReady(ctx uint64, ok bool) {
	p, found := s.reads[ctx]
	if !found {
		return
	}
	delete(s.reads, ctx)
	if _, open := s.clients[p.conn]; !open {
		return
	}
	if ok {
		s.env.Send(p.conn, appendOK(nil, p.id, s.chain.Index, s.chain.Zxid, s.chain.Hash))
	} else {
		s.env.Send(p.conn, appendFailed(nil, p.id, "no leader confirmed the read"))
	}
}

// expire forgets requests that will never be answered.
func (s *Server) expire() {
	now := s.env.Now()
	for req, p := range s.pending { // order-independent: only deletes, answers go to distinct requests
		if now.Sub(p.at) > requestLife {
			delete(s.pending, req)
		}
	}
}

// Payload returns the client payload of an entry proposed through replog.
func Payload(e *raft.Entry) []byte {
	if e.Type != raft.EntryNormal || len(e.Data) < 24 {
		return nil
	}
	return e.Data[24:]
}
