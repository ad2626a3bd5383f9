package replog

import (
	"fmt"
	"time"

	"herd/node"
	"herd/node/frame"
)

// ClientConfig configures a replog client: it gets Proposals payloads
// committed and performs a linearizable read after every ReadEvery-th
// proposal, keeping up to Window requests in flight on one connection to a
// random server, and starting over elsewhere when the connection fails, a
// request fails, or nothing answers for Timeout.
type ClientConfig struct {
	Name        string
	Servers     []string // client addresses
	Proposals   int
	ReadEvery   int // 0: no reads
	Window      int
	Interval    time.Duration // between new proposals
	PayloadSize int
	Timeout     time.Duration
	// OnAck: a proposal committed. OnReadStart/OnReadDone bracket a read
	// (checkers compare it with the acknowledgements before it began).
	OnAck       func(payload []byte, r Response)
	OnReadStart func(id uint64)
	OnReadDone  func(id uint64, r Response)
	OnViolation func(msg string)
}

const (
	timerClientRetry   node.TimerName = "replog/retry"
	timerClientTimeout node.TimerName = "replog/timeout"
	timerClientNext    node.TimerName = "replog/next"
)

type request struct {
	id      uint64
	read    bool
	payload []byte
	sent    bool
}

// Client is a replog client core.
type Client struct {
	env  node.Env
	cfg  ClientConfig
	conn node.ConnID
	in   *frame.Reader

	queue    []*request // not yet answered, oldest first
	inflight map[uint64]*request
	nextID   uint64
	made     int // proposals created
	acked    int
	reads    int
	nextNew  node.Time
	done     bool
}

// NewClient returns a Factory for replog clients.
func NewClient(cfg ClientConfig) node.Factory {
	if cfg.Window <= 0 {
		cfg.Window = 4
	}
	if cfg.PayloadSize <= 0 {
		cfg.PayloadSize = 32
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	return func(env node.Env) node.Machine {
		return &Client{env: env, cfg: cfg, inflight: make(map[uint64]*request)}
	}
}

// Done reports whether every proposal was acknowledged.
func (c *Client) Done() bool { return c.done }

// Acked is the number of acknowledged proposals.
func (c *Client) Acked() int { return c.acked }

// Step implements node.Machine.
func (c *Client) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		c.connect()
	case node.EvConnected:
		if ev.Conn == c.conn {
			c.fill()
		}
	case node.EvReceived:
		if ev.Conn == c.conn {
			c.received(ev.Data)
		}
	case node.EvClosed:
		if ev.Conn == c.conn {
			c.lost("connection closed: " + ev.Err.Error())
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerClientRetry:
			c.connect()
		case timerClientTimeout:
			if len(c.inflight) > 0 {
				c.env.Close(c.conn)
				c.lost("timed out")
			}
		case timerClientNext:
			c.fill()
		}
	}
}

func (c *Client) connect() {
	if c.done || c.conn != 0 {
		return
	}
	c.conn = c.env.Dial(c.cfg.Servers[c.env.Rand().IntN(len(c.cfg.Servers))])
	c.in = frame.NewReader(MaxFrame)
	c.fill()
}

// lost abandons the connection; unanswered requests go out again on the
// next one (a proposal may then be committed twice: that is allowed).
func (c *Client) lost(why string) {
	c.env.Logf("%s: %s", c.cfg.Name, why)
	c.conn = 0
	for _, r := range c.queue {
		if r.sent {
			r.sent = false
			delete(c.inflight, r.id)
			c.nextID++
			r.id = c.nextID // a fresh id: a late answer to the old one is not this
		}
	}
	c.env.CancelTimer(timerClientTimeout)
	c.env.SetTimer(timerClientRetry, c.env.Rand().Between(20*time.Millisecond, 200*time.Millisecond))
}

func (c *Client) fill() {
	if c.conn == 0 {
		return
	}
	for len(c.inflight) < c.cfg.Window {
		var r *request
		for _, q := range c.queue {
			if !q.sent {
				r = q
				break
			}
		}
		if r == nil {
			if c.made >= c.cfg.Proposals {
				return
			}
			if now := c.env.Now(); now < c.nextNew {
				c.env.SetTimer(timerClientNext, c.nextNew.Sub(now))
				return
			}
			c.nextNew = c.env.Now().Add(c.cfg.Interval)
			c.made++
			c.nextID++
			p := fmt.Appendf(nil, "%s:%d:", c.cfg.Name, c.made)
			for len(p) < c.cfg.PayloadSize {
				p = append(p, byte('a'+c.env.Rand().IntN(26)))
			}
			r = &request{id: c.nextID, payload: p}
			c.queue = append(c.queue, r)
			if c.cfg.ReadEvery > 0 && c.made%c.cfg.ReadEvery == 0 {
				c.nextID++
				c.queue = append(c.queue, &request{id: c.nextID, read: true})
			}
		}
		typ := byte(reqPropose)
		if r.read {
			typ = reqRead
			if c.cfg.OnReadStart != nil {
				c.cfg.OnReadStart(r.id)
			}
		}
		c.env.Send(c.conn, appendRequest(nil, typ, r.id, r.payload))
		r.sent = true
		if len(c.inflight) == 0 {
			c.env.SetTimer(timerClientTimeout, c.cfg.Timeout)
		}
		c.inflight[r.id] = r
	}
}

func (c *Client) received(data []byte) {
	c.in.Feed(data)
	for {
		body, ok, err := c.in.Next()
		if err != nil {
			c.violation(err.Error())
			return
		}
		if !ok {
			break
		}
		resp, err := ParseResponse(body)
		if err != nil {
			c.violation(err.Error())
			return
		}
		r := c.inflight[resp.ID]
		if r == nil {
			c.violation(fmt.Sprintf("answer to request %d, which is not in flight", resp.ID))
			return
		}
		if !resp.OK {
			// No leader, or the leader lost the proposal: try again, maybe
			// at another server.
			c.env.Close(c.conn)
			c.lost("request failed: " + resp.Reason)
			return
		}
		delete(c.inflight, resp.ID)
		c.remove(r)
		if r.read {
			c.reads++
			if c.cfg.OnReadDone != nil {
				c.cfg.OnReadDone(r.id, resp)
			}
		} else {
			c.acked++
			if c.cfg.OnAck != nil {
				c.cfg.OnAck(r.payload, resp)
			}
		}
	}
	if len(c.inflight) > 0 {
		c.env.SetTimer(timerClientTimeout, c.cfg.Timeout)
	} else {
		c.env.CancelTimer(timerClientTimeout)
	}
	if c.made >= c.cfg.Proposals && len(c.queue) == 0 && !c.done {
		c.done = true
		c.env.Close(c.conn)
		c.conn = 0
		return
	}
	c.fill()
}

func (c *Client) remove(r *request) {
	for i, q := range c.queue {
		if q == r {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			return
		}
	}
}

func (c *Client) violation(msg string) {
	msg = c.cfg.Name + ": " + msg
	if c.cfg.OnViolation != nil {
		c.cfg.OnViolation(msg)
	} else {
		c.env.Halt(msg)
	}
}
