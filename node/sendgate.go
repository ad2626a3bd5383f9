package node

import (
	"errors"
	"fmt"
)

// Transport is what a SendGate releases into: the shell's real or simulated
// connections.
type Transport interface {
	Send(c ConnID, data []byte)
	Close(c ConnID)
	Reset(c ConnID)
	// RecycleSent is Env.RecycleSent, released in order with c's sends.
	RecycleSent(c ConnID, data []byte)
}

// SendGate implements Env.SendAfter for a shell: it holds sends behind
// durability barriers while keeping per-connection order. It contains no I/O;
// the production shell and the simulator share it so both enforce the rule
// identically.
//
// Disk operations complete in submission order, so "op N completed" implies
// every earlier op completed too, and a held send waits for exactly one OpID.
// Background ops (DiskOp.Background) are the exception: later ops may
// complete before them, so the gate steps over them, and a send cannot wait
// on one (its core waits for the completion event instead).
//
// If a mutating disk operation fails in a way that may have lost data (an
// I/O error, a full disk), the gate is poisoned for the rest of the
// incarnation: every held send is dropped and its connection reset, and every
// later SendAfter resets its connection at once. After a failed fsync, Linux
// may discard the dirty pages and report success for the next fsync
// ("fsyncgate"), so no later barrier of this incarnation can be trusted.
// Errors that touched nothing (a bad path, a missing file) do not poison.
type SendGate struct {
	t        Transport
	done     OpID // every op <= done has completed, bar background ones in bgPending
	poisoned bool
	pending  map[OpID]DiskOpKind // submitted barrier ops not yet completed
	// bgPending holds the background ops not yet completed; bgAhead those
	// above done, completed or not, which a completion may step over.
	bgPending map[OpID]bool
	bgAhead   map[OpID]bool
	held      []heldSend      // in submission order
	perConn   map[ConnID]int  // number of held items per connection
	blocked   map[ConnID]bool // scratch for release()
}

type heldSend struct {
	conn    ConnID
	data    []byte
	after   OpID // 0: only waiting behind earlier items on conn
	close   bool
	recycle bool // an Env.RecycleSent of data
}

// MaxHeldSends bounds the gate. A core that holds more acknowledgements than
// this behind unfinished syncs has lost track of its own backpressure.
const MaxHeldSends = 1 << 20

// NewSendGate returns a gate releasing into t.
func NewSendGate(t Transport) *SendGate {
	return &SendGate{
		t:         t,
		pending:   make(map[OpID]DiskOpKind),
		bgPending: make(map[OpID]bool),
		bgAhead:   make(map[OpID]bool),
		perConn:   make(map[ConnID]int),
		blocked:   make(map[ConnID]bool),
	}
}

// Submitted records that op of kind was handed to the disk.
func (g *SendGate) Submitted(op OpID, kind DiskOpKind) {
	if kind.IsDurabilityBarrier() {
		g.pending[op] = kind
	}
}

// SubmittedBackground records that background op of kind was handed to the
// disk.
func (g *SendGate) SubmittedBackground(op OpID, kind DiskOpKind) {
	if !kind.IsDurabilityBarrier() {
		panic(fmt.Sprintf("SendGate: background %v", kind))
	}
	g.bgPending[op] = true
	g.bgAhead[op] = true
}

// Send sends data now unless earlier items on c are held.
func (g *SendGate) Send(c ConnID, data []byte) {
	if g.perConn[c] == 0 {
		g.t.Send(c, data)
		return
	}
	g.hold(heldSend{conn: c, data: data})
}

// Close closes c now unless earlier items on c are held.
func (g *SendGate) Close(c ConnID) {
	if g.perConn[c] == 0 {
		g.t.Close(c)
		return
	}
	g.hold(heldSend{conn: c, close: true})
}

// RecycleSent passes on a RecycleSent of data, in order with c's sends: if
// earlier sends on c are held, it waits behind them, and if they are
// dropped, so is it (the buffer is left to the collector).
func (g *SendGate) RecycleSent(c ConnID, data []byte) {
	if g.perConn[c] == 0 {
		g.t.RecycleSent(c, data)
		return
	}
	g.hold(heldSend{conn: c, data: data, recycle: true})
}

// SendAfter sends data once op has completed successfully.
func (g *SendGate) SendAfter(c ConnID, data []byte, op OpID) {
	if g.poisoned {
		g.dropConn(c)
		g.t.Reset(c)
		return
	}
	if g.bgPending[op] || g.bgAhead[op] {
		panic(fmt.Sprintf("SendAfter: op %d runs in the background", op))
	}
	if op <= g.done {
		g.Send(c, data)
		return
	}
	if _, ok := g.pending[op]; !ok {
		panic(fmt.Sprintf("SendAfter: op %d is not a pending sync or syncdir", op))
	}
	g.hold(heldSend{conn: c, data: data, after: op})
}

func (g *SendGate) hold(h heldSend) {
	if len(g.held) >= MaxHeldSends {
		panic("SendGate: more than MaxHeldSends sends held behind syncs")
	}
	g.held = append(g.held, h)
	g.perConn[h.conn]++
}

// Completed records that op finished with err and releases what it unblocks.
func (g *SendGate) Completed(op OpID, kind DiskOpKind, err error) {
	if op <= g.done && !g.bgPending[op] {
		panic(fmt.Sprintf("SendGate: op %d completed after op %d: completions must be in order", op, g.done))
	}
	// Only background ops may be outstanding below a completion.
	for id := g.done + 1; id < op; id++ {
		if !g.bgAhead[id] {
			panic(fmt.Sprintf("SendGate: op %d completed before op %d: completions must be in order", op, id))
		}
	}
	if g.bgPending[op] {
		delete(g.bgPending, op)
	} else {
		for id := g.done + 1; id < op; id++ {
			delete(g.bgAhead, id) // a pending one stays in bgPending
		}
		g.done = op
		delete(g.pending, op)
	}
	for g.bgAhead[g.done+1] && !g.bgPending[g.done+1] {
		delete(g.bgAhead, g.done+1)
		g.done++
	}
	if err != nil && mutates(kind) && mayLoseData(err) && !g.poisoned {
		g.poisoned = true
		for _, h := range g.held {
			if !h.close && !h.recycle {
				g.t.Reset(h.conn)
			}
		}
		g.held = g.held[:0]
		clear(g.perConn)
		return
	}
	if len(g.held) > 0 {
		g.release()
	}
}

// Forget drops everything held for c (the connection is gone).
func (g *SendGate) Forget(c ConnID) {
	if g.perConn[c] > 0 {
		g.dropConn(c)
	}
}

func (g *SendGate) dropConn(c ConnID) {
	kept := g.held[:0]
	for _, h := range g.held {
		if h.conn != c {
			kept = append(kept, h)
		}
	}
	clear(g.held[len(kept):])
	g.held = kept
	delete(g.perConn, c)
}

func (g *SendGate) release() {
	kept := g.held[:0]
	for _, h := range g.held {
		if g.blocked[h.conn] || h.after > g.done {
			g.blocked[h.conn] = true
			kept = append(kept, h)
			continue
		}
		if g.perConn[h.conn]--; g.perConn[h.conn] == 0 {
			delete(g.perConn, h.conn)
		}
		switch {
		case h.close:
			g.t.Close(h.conn)
		case h.recycle:
			g.t.RecycleSent(h.conn, h.data)
		default:
			g.t.Send(h.conn, h.data)
		}
	}
	clear(g.held[len(kept):])
	g.held = kept
	clear(g.blocked)
}

// Held returns how many sends are waiting.
func (g *SendGate) Held() int { return len(g.held) }

func mayLoseData(err error) bool {
	return !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotExist) && !errors.Is(err, ErrExist)
}

func mutates(k DiskOpKind) bool {
	switch k {
	case OpWrite, OpTruncate, OpSync, OpSyncDir, OpRename:
		return true
	}
	return false
}
