package demo

import (
	"encoding/binary"
	"fmt"
	"time"

	"herd/node"
	"herd/node/frame"
)

// ClientConfig configures a demo client: it gets Appends records
// acknowledged, keeping up to Window in flight, reconnecting (to a random
// server) whenever its connection dies or stops answering, and resending
// whatever was not acknowledged.
type ClientConfig struct {
	Name        string
	Servers     []string
	Appends     int
	Window      int           // default 4
	Interval    time.Duration // pause between new appends (0: none)
	PayloadSize int           // default 64
	// RequestTimeout: no acknowledgement for this long with appends in
	// flight means the connection is dead or half-open; give up on it.
	RequestTimeout time.Duration // default 1s
	// OnSent is called for every append sent (retries included), OnAck for
	// every acknowledgement, with the server address it came from.
	OnSent      func(server string, payload []byte)
	OnAck       func(server string, off int64, payload []byte)
	OnViolation func(msg string)
	OnDone      func()
}

const (
	timerReconnect node.TimerName = "reconnect"
	timerRequest   node.TimerName = "request-timeout"
	timerNext      node.TimerName = "next-append"
)

// Client is the demo client core.
type Client struct {
	env node.Env
	cfg ClientConfig

	conn      node.ConnID
	server    string
	connected bool
	in        *frame.Reader
	seq       uint64 // last sequence number sent on conn

	unacked  [][]byte // oldest first; the first inFlight of them are sent on conn
	inFlight int
	made     int       // payloads created
	nextNew  node.Time // earliest time for the next new payload (Interval)
	acked    int
	done     bool
}

// NewClient returns a Factory for demo clients.
func NewClient(cfg ClientConfig) node.Factory {
	if cfg.Window <= 0 {
		cfg.Window = 4
	}
	if cfg.PayloadSize <= 0 {
		cfg.PayloadSize = 64
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = time.Second
	}
	return func(env node.Env) node.Machine { return &Client{env: env, cfg: cfg} }
}

// Acked is the number of acknowledged appends.
func (c *Client) Acked() int { return c.acked }

// Done reports whether every append was acknowledged.
func (c *Client) Done() bool { return c.done }

// Step implements node.Machine.
func (c *Client) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		c.connect()
	case node.EvConnected:
		if ev.Conn == c.conn {
			c.connected = true
			c.fill()
		}
	case node.EvReceived:
		if ev.Conn == c.conn {
			c.received(ev.Data)
		}
	case node.EvClosed:
		if ev.Conn == c.conn {
			c.lost()
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerReconnect:
			c.connect()
		case timerRequest:
			if c.inFlight > 0 {
				c.env.Logf("%s: no answer from %s for %v", c.cfg.Name, c.server, c.cfg.RequestTimeout)
				c.env.Close(c.conn)
				c.lost()
			}
		case timerNext:
			c.fill()
		}
	}
}

func (c *Client) connect() {
	if c.done || c.conn != 0 {
		return
	}
	c.server = c.cfg.Servers[c.env.Rand().IntN(len(c.cfg.Servers))]
	c.conn = c.env.Dial(c.server)
	c.connected = false
	c.in = frame.NewReader(MaxFrame)
	c.seq = 0
	c.inFlight = 0
}

// lost forgets the connection; everything in flight will be resent.
func (c *Client) lost() {
	c.conn = 0
	c.connected = false
	c.inFlight = 0
	c.env.CancelTimer(timerRequest)
	c.env.SetTimer(timerReconnect, c.env.Rand().Between(10*time.Millisecond, 100*time.Millisecond))
}

// fill sends unacknowledged appends until the window is full, creating new
// ones while the quota allows.
func (c *Client) fill() {
	if !c.connected {
		return
	}
	for c.inFlight < c.cfg.Window {
		if c.inFlight == len(c.unacked) {
			if c.made >= c.cfg.Appends {
				break
			}
			if now := c.env.Now(); now < c.nextNew {
				c.env.SetTimer(timerNext, c.nextNew.Sub(now))
				break
			}
			c.unacked = append(c.unacked, c.newPayload())
			c.nextNew = c.env.Now().Add(c.cfg.Interval)
		}
		p := c.unacked[c.inFlight]
		c.seq++
		c.env.Send(c.conn, appendFrame(nil, msgAppend, c.seq, p))
		if c.cfg.OnSent != nil {
			c.cfg.OnSent(c.server, p)
		}
		if c.inFlight == 0 {
			c.env.SetTimer(timerRequest, c.cfg.RequestTimeout)
		}
		c.inFlight++
	}
}

// newPayload makes a unique payload: the client's name, a counter, filler.
func (c *Client) newPayload() []byte {
	c.made++
	p := fmt.Appendf(nil, "%s:%d:", c.cfg.Name, c.made)
	for len(p) < c.cfg.PayloadSize {
		p = append(p, 'a'+byte(c.env.Rand().IntN(26)))
	}
	return p
}

func (c *Client) received(data []byte) {
	c.in.Feed(data)
	for {
		body, ok, err := c.in.Next()
		if err != nil || (ok && len(body) != 17) {
			c.violation(fmt.Sprintf("bad frame from %s: %v", c.server, err))
			return
		}
		if !ok {
			break
		}
		typ, seq, tail, _ := parseFrame(body)
		// Replies come in request order, so an acknowledgement must be for
		// the oldest append in flight on this connection.
		want := c.seq - uint64(c.inFlight) + 1
		if typ != msgAppended || c.inFlight == 0 || seq != want {
			c.violation(fmt.Sprintf("reply type %d seq %d from %s, want appended seq %d", typ, seq, c.server, want))
			return
		}
		off := int64(binary.BigEndian.Uint64(tail))
		p := c.unacked[0]
		c.unacked = c.unacked[1:]
		c.inFlight--
		c.acked++
		if c.cfg.OnAck != nil {
			c.cfg.OnAck(c.server, off, p)
		}
		if c.inFlight > 0 {
			c.env.SetTimer(timerRequest, c.cfg.RequestTimeout)
		} else {
			c.env.CancelTimer(timerRequest)
		}
	}
	if c.acked == c.cfg.Appends && !c.done {
		c.done = true
		c.env.Close(c.conn)
		c.conn = 0
		if c.cfg.OnDone != nil {
			c.cfg.OnDone()
		}
		return
	}
	c.fill()
}

func (c *Client) violation(msg string) {
	msg = c.cfg.Name + ": " + msg
	if c.cfg.OnViolation != nil {
		c.cfg.OnViolation(msg)
	} else {
		c.env.Halt(msg)
	}
	if c.conn != 0 {
		c.env.Close(c.conn)
		c.lost()
	}
}
