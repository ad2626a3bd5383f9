// Package broker is herd's Kafka-compatible broker core: one broker, serving
// the Kafka wire protocol on its listeners and keeping each partition's log
// with package partlog.
//
// Like every core it is a single-threaded state machine driven by node.Event
// and acting only through node.Env. Requests are decoded with franz-go's kmsg
// (which keeps record batches as raw bytes, so produced batches reach the log
// and fetched ones reach the wire without being re-encoded). Each API key is
// served by one file named after it (00_produce.go, 01_fetch.go, ...), which
// states the versions it serves.
//
// Replies leave each connection strictly in request order, as every Kafka
// client requires, even though a Produce waits for its disk write and a Fetch
// may wait for data: each request takes a slot in its connection's reply
// queue when it is read, and a slot's bytes are sent only once every earlier
// slot has been sent.
package broker

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"time"

	"herd/node"
	"herd/node/broker/partlog"
	"herd/node/trash"
)

const (
	timerTick  node.TimerName = "broker/tick"
	timerFetch node.TimerName = "broker/fetch"
	// timerTrash paces the emptying of deleted segments (partlog.Host.After).
	timerTrash node.TimerName = "broker/trash"
	tickEvery                 = time.Second

	// maxInFlight bounds the requests of one connection that are read but
	// not yet answered. Past it the broker stops decoding that
	// connection's input until replies drain (kgo keeps 5 in flight,
	// kafka-python 5; librdkafka may pipeline more and simply waits).
	maxInFlight = 64
	// maxBacklog bounds the undecoded input buffered for one connection
	// beyond one maximal request: the shell cannot be told to stop reading,
	// so a client that keeps pipelining past maxInFlight is cut off here.
	maxBacklog = 64 << 20
	// maxConns bounds open connections.
	maxConns = 10_000
	// maxPartitionsPerTopic bounds one topic's partition count, so a
	// CreateTopics cannot ask for 2^31 logs.
	maxPartitionsPerTopic = 10_000
)

type brokerState uint8

const (
	stStarting brokerState = iota // opening the log directory
	stReady
	stClosing
	stFailed
)

// Broker is the broker core.
type Broker struct {
	env     node.Env
	cfg     Config
	openDir openDirFunc
	state   brokerState
	dir     logDir

	// diskDone routes each disk completion to the partlog callback that
	// submitted the operation.
	diskDone map[node.OpID]func(node.Event)

	conns  map[node.ConnID]*conn
	topics map[string]*topic
	// deleting counts, per topic name, partition logs still being deleted:
	// the name cannot be created again until its directories are renamed
	// away and the checkpoints forget them (their files are emptied later).
	deleting map[string]int
	// trashFire is the log directory's pending timer (timerTrash).
	trashFire func()

	// fetches are the Fetch requests waiting for data or their deadline.
	fetches      []*fetch
	fetchTimerAt node.Time
	fetchTimerOn bool

	closeDone func(error)
}

// New returns a Factory for brokers storing their logs with partlog in the
// node's data directory (the shell's FS is cfg.LogDirs[0]).
func New(cfg Config) node.Factory { return newFactory(cfg, openPartlogDir) }

func newFactory(cfg Config, open openDirFunc) node.Factory {
	if cfg.SocketRequestMaxBytes <= 0 {
		cfg.SocketRequestMaxBytes = DefaultSocketRequestMaxBytes
	}
	if cfg.NumPartitions <= 0 {
		cfg.NumPartitions = 1
	}
	if cfg.DefaultReplicationFactor <= 0 {
		cfg.DefaultReplicationFactor = 1
	}
	if cfg.Log == (partlog.Config{}) {
		cfg.Log = partlog.DefaultConfig()
	}
	if cfg.Props == nil {
		cfg.Props = map[string]string{}
	}
	return func(env node.Env) node.Machine {
		return &Broker{
			env:      env,
			cfg:      cfg,
			openDir:  open,
			diskDone: make(map[node.OpID]func(node.Event)),
			conns:    make(map[node.ConnID]*conn),
			topics:   make(map[string]*topic),
			deleting: make(map[string]int),
		}
	}
}

// Ready reports whether the broker has opened its logs and serves requests.
func (b *Broker) Ready() bool { return b.state == stReady }

// Step implements node.Machine.
func (b *Broker) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		b.start()
	case node.EvAccepted:
		b.accepted(ev)
	case node.EvReceived:
		if c := b.conns[ev.Conn]; c != nil {
			b.received(c, ev.Data)
		}
	case node.EvClosed:
		if c := b.conns[ev.Conn]; c != nil {
			b.forget(c)
		}
	case node.EvDiskDone:
		if fn, ok := b.diskDone[ev.Op]; ok {
			delete(b.diskDone, ev.Op)
			fn(ev)
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerTick:
			if b.state == stReady {
				b.dir.Tick()
				b.env.SetTimer(timerTick, tickEvery)
			}
		case timerFetch:
			b.fetchTimerOn = false
			b.expireFetches()
		case timerTrash:
			if fn := b.trashFire; fn != nil {
				b.trashFire = nil
				fn()
			}
		}
	}
}

func (b *Broker) host() partlog.Host {
	return partlog.Host{
		Disk: func(op node.DiskOp, done func(node.Event)) {
			b.diskDone[b.env.Disk(op)] = done
		},
		Now:       b.env.Now,
		WallClock: b.env.WallClock,
		Logf:      b.env.Logf,
		Recycle:   b.env.Recycle,
		After: func(d time.Duration, fn func()) {
			b.trashFire = fn
			b.env.SetTimer(timerTrash, d)
		},
		Trash: b.trashConfig(),
		Bug:   b.cfg.Bug,
	}
}

// brokerTrash paces the emptying of deleted segments: 4 MiB every 10 ms
// (about 400 MiB/s; a 1 GiB segment in about 3 s), and at most 4 GiB or 4,096
// files waiting, past which files are removed whole (the space retention
// frees must come back in bounded time). Removed whole, 1 GiB files stalled a
// broker's fsyncs 370-460 ms (DESIGN.md, section 11).
var brokerTrash = trash.Config{StepBytes: 4 << 20, Gap: 10 * time.Millisecond, MaxFiles: 4096, MaxBytes: 4 << 30}

func (b *Broker) trashConfig() trash.Config {
	cfg := brokerTrash
	if b.cfg.TrashStepBytes > 0 {
		cfg.StepBytes = b.cfg.TrashStepBytes
	}
	return cfg
}

// TrashStats reports what the log directory's trash did (zero before the
// directory is open).
func (b *Broker) TrashStats() trash.Stats {
	if b.dir == nil {
		return trash.Stats{}
	}
	return b.dir.TrashStats()
}

func (b *Broker) start() {
	b.env.Logf("broker %d: opening logs", b.cfg.BrokerID)
	// The shell's FS is rooted at the log directory, so the Dir is "".
	b.openDir(b.host(), "", b.cfg.Log, func(d logDir, err error) {
		if err != nil {
			b.state = stFailed
			b.env.Halt("opening the log directory: " + err.Error())
			return
		}
		b.dir = d
		d.OnHighWatermark(b.highWatermark)
		// The only log directory went offline: stop, as Kafka does. Staying
		// up would refuse every write until an operator noticed; a restart
		// runs recovery and serves again.
		d.OnFailure(func(err error) {
			b.state = stFailed
			b.env.Halt("log directory failed: " + err.Error())
		})
		b.loadTopics()
		b.state = stReady
		b.env.SetTimer(timerTick, tickEvery)
		b.env.Logf("broker %d: ready, %d topics", b.cfg.BrokerID, len(b.topics))
		// Serve what connections sent while the logs were opening.
		for _, id := range sortedConnIDs(b.conns) {
			if c := b.conns[id]; c != nil {
				b.process(c)
			}
		}
	})
}

// Shutdown stops serving (every connection is closed), flushes and
// checkpoints the logs, and calls done. The shell's owner calls it (through
// shell.Do) before stopping the shell, so that a clean stop leaves nothing
// for recovery to do.
func (b *Broker) Shutdown(done func(error)) {
	for _, id := range sortedConnIDs(b.conns) {
		b.drop(b.conns[id], "")
	}
	switch b.state {
	case stReady:
		b.state = stClosing
		b.env.CancelTimer(timerTick)
		b.env.CancelTimer(timerFetch)
		b.dir.Close(func(err error) {
			b.state = stFailed
			done(err)
		})
	default:
		b.state = stFailed
		done(nil)
	}
}

// ---- connections ----

// conn is one client connection.
type conn struct {
	id     node.ConnID
	remote string
	// listener is the index in cfg.Listeners of the listener it came in
	// on (Metadata advertises that listener's address).
	listener int
	// in holds received bytes not yet decoded into requests. It aliases
	// the EvReceived buffer when it can, so a request (and the record
	// batches in it) is usually not copied at all.
	in []byte
	// whole is the EvReceived buffer in aliases from its start, if it
	// does: a request that is all of it may hand it back (Env.Recycle).
	whole []byte
	// queue holds the requests read and not yet answered, in order.
	queue      []*request
	processing bool
	closed     bool
}

// request is one request and its reply slot.
type request struct {
	c        *conn
	key      int16
	version  int16
	corr     int32
	clientID string
	done     bool
	// out is the framed reply; nil with done set sends nothing (acks=0).
	out []byte
	// outv, if set instead, is the framed reply as buffers sent in order
	// (Fetch: record sets are not copied into one).
	outv [][]byte
	// sentFrom are the read buffers outv sends from, handed back to the
	// shell (Env.RecycleSent) right after the reply is sent.
	sentFrom [][]byte
	// closeAfter closes the connection once the reply slot is reached
	// (acks=0 Produce errors, as Kafka signals them).
	closeAfter bool
	// frame, if set, is the EvReceived buffer that holds this request and
	// nothing else: once nothing refers to it (a produce's batches are
	// written), it goes back to the shell.
	frame []byte
}

func (b *Broker) accepted(ev node.Event) {
	if len(b.conns) >= maxConns || b.state == stClosing || b.state == stFailed {
		b.env.Logf("broker: refusing connection from %s (%d open)", ev.Remote, len(b.conns))
		b.env.Close(ev.Conn)
		return
	}
	c := &conn{id: ev.Conn, remote: ev.Remote}
	if _, port, err := splitHostPort(ev.Local); err == nil {
		for i, l := range b.cfg.Listeners {
			if strconv.Itoa(l.Port) == port {
				c.listener = i
				break
			}
		}
	}
	b.conns[ev.Conn] = c
}

func (b *Broker) drop(c *conn, why string) {
	if c == nil || c.closed {
		return
	}
	if why != "" {
		b.env.Logf("broker: closing connection %d from %s: %s", c.id, c.remote, why)
	}
	b.env.Close(c.id)
	b.forget(c)
}

// forget removes a connection. Requests still pending on it complete into
// nothing: their replies find c.closed.
func (b *Broker) forget(c *conn) {
	c.closed = true
	c.in, c.whole = nil, nil
	c.queue = nil
	delete(b.conns, c.id)
}

func (b *Broker) received(c *conn, data []byte) {
	if len(c.in) == 0 {
		// The core owns data: alias it. The capacity is clipped so that
		// appending later never writes into memory a request aliases.
		c.in = data[:len(data):len(data)]
		c.whole = data
	} else {
		c.whole = nil
		if cap(c.in)-len(c.in) < len(data) {
			need := len(c.in) + len(data)
			if len(c.in) >= 4 {
				// Size the buffer for the whole frame so a large request
				// arriving in many pieces is copied once.
				if n := 4 + int(int32(binary.BigEndian.Uint32(c.in))); n > need && n <= 4+b.cfg.SocketRequestMaxBytes {
					need = n
				}
			}
			nb := make([]byte, len(c.in), need)
			copy(nb, c.in)
			c.in = nb
		}
		c.in = append(c.in, data...)
	}
	if len(c.in) > b.cfg.SocketRequestMaxBytes+4+maxBacklog {
		b.drop(c, "too much pipelined input")
		return
	}
	b.process(c)
}

// process decodes and starts the requests buffered on c, while the reply
// queue has room.
func (b *Broker) process(c *conn) {
	if c.processing || b.state != stReady {
		return
	}
	c.processing = true
	defer func() { c.processing = false }()
	for !c.closed && len(c.queue) < maxInFlight && len(c.in) >= 4 {
		n := int64(int32(binary.BigEndian.Uint32(c.in)))
		if n < 0 || n > int64(b.cfg.SocketRequestMaxBytes) {
			b.drop(c, fmt.Sprintf("request of %d bytes exceeds socket.request.max.bytes=%d", n, b.cfg.SocketRequestMaxBytes))
			return
		}
		if int64(len(c.in)-4) < n {
			return
		}
		body := c.in[4 : 4+n : 4+n]
		var frame []byte
		if c.whole != nil && len(c.in) == len(c.whole) && int64(len(c.in)) == 4+n {
			frame = c.whole
		}
		c.whole = nil // in no longer starts where it did
		c.in = c.in[4+n:]
		if len(c.in) == 0 {
			c.in = nil
		}
		b.request(c, body, frame)
	}
}

// finish completes r's reply slot with a framed reply (nil: none) and sends
// whatever is now at the head of the queue.
func (b *Broker) finish(r *request, out []byte) {
	if r.done {
		panic("broker: request answered twice")
	}
	r.out = out
	b.complete(r)
}

// finishVec is finish with the reply as buffers to send in order.
func (b *Broker) finishVec(r *request, outv [][]byte) {
	if r.done {
		panic("broker: request answered twice")
	}
	r.outv = outv
	b.complete(r)
}

func (b *Broker) complete(r *request) {
	r.done = true
	c := r.c
	if c.closed {
		return
	}
	sent := false
	for len(c.queue) > 0 && c.queue[0].done {
		head := c.queue[0]
		c.queue[0] = nil
		c.queue = c.queue[1:]
		sent = true
		if head.out != nil {
			b.env.Send(c.id, head.out)
		}
		for _, p := range head.outv {
			b.env.Send(c.id, p)
		}
		for _, buf := range head.sentFrom {
			b.env.RecycleSent(c.id, buf)
		}
		head.sentFrom = nil
		if head.closeAfter {
			b.drop(c, "")
			return
		}
	}
	if len(c.queue) == 0 {
		c.queue = nil
	}
	if sent && len(c.in) >= 4 {
		b.process(c)
	}
}

func sortedConnIDs(m map[node.ConnID]*conn) []node.ConnID {
	ids := make([]node.ConnID, 0, len(m))
	for id := range m { // order-independent: sorted below
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
