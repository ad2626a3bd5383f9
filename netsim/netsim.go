// Package netsim is the simulator's network: TCP-like connections between
// named hosts, driven by the simulator's event queue.
//
// What a connection guarantees, as TCP does: bytes arrive in the order they
// were sent, without gaps or duplicates, until the connection dies. What it
// does not: when bytes arrive (latency with jitter, bandwidth), how they are
// split or coalesced into reads, and whether the connection survives
// (resets, partitions that outlast the retransmission timeout, crashes). Loss,
// duplication and reordering of application messages therefore appear only
// across reconnects, through the application's own retries, exactly as on a
// real network.
//
// Each direction of a connection is a flow: a FIFO of chunks with strictly
// increasing delivery times and at most one event scheduled (for its head).
// Control segments (SYN-ACK, FIN, RST) travel in the same flows as data, so
// a peer can never see data before the connection is established or after it
// was closed.
package netsim

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unsafe"

	"herd/node"
	"herd/sim/sched"
)

// Host receives the network events of one simulated machine.
type Host interface {
	Deliver(ev node.Event)
}

// LinkParams describes one direction between two hosts.
type LinkParams struct {
	// Latency is the minimum one-way delay.
	Latency time.Duration
	// Jitter is the mean of an exponentially distributed extra delay.
	Jitter time.Duration
	// Bandwidth in bytes per second; 0 means unlimited.
	Bandwidth int64
}

// Config is the network's behaviour. The zero value is not useful; start from
// DefaultConfig.
type Config struct {
	Link LinkParams
	// DialTimeout: a dial whose SYN or SYN-ACK is lost fails after this long.
	DialTimeout time.Duration
	// RetransmitTimeout: data that cannot be delivered for this long (a
	// partition) kills the connection with ErrTimeout at the sender, like
	// TCP's user timeout.
	RetransmitTimeout time.Duration
	// SplitChance: a delivery hands the receiver only a prefix of the chunk.
	SplitChance float64
	// CoalesceChance: a delivery also hands over the chunks that arrive
	// within CoalesceWindow, as one read.
	CoalesceChance float64
	CoalesceWindow time.Duration
	// MaxQueueBytes bounds the undelivered bytes of one flow; exceeding it
	// resets the connection at the sender, as the production shell does when
	// its send queue overflows.
	MaxQueueBytes int
}

// DefaultConfig is a LAN: sub-millisecond latency, mild jitter, fragmentation
// on, generous queues.
func DefaultConfig() Config {
	return Config{
		Link:              LinkParams{Latency: 200 * time.Microsecond, Jitter: 100 * time.Microsecond},
		DialTimeout:       2 * time.Second,
		RetransmitTimeout: 10 * time.Second,
		SplitChance:       0.05,
		CoalesceChance:    0.05,
		CoalesceWindow:    time.Millisecond,
		MaxQueueBytes:     64 << 20,
	}
}

// Stats counts what the network did.
type Stats struct {
	Dials, Refused, DialTimeouts, Accepted uint64
	Chunks, Bytes                          uint64
	Resets, RetransmitTimeouts             uint64
}

// Network is the simulated network.
type Network struct {
	q         *sched.Queue
	rng       *node.Rand
	cfg       Config
	hosts     []*host
	byName    map[string]*host
	listeners map[string]*host // address -> host listening on it
	ends      map[node.ConnID]*endpoint
	nextID    node.ConnID
	links     [][]link // [from][to]
	stalled   []*flow  // flows waiting for a partition to heal, in stall order
	clogged   []*flow  // flows waiting for a clog to end, in clog order (Heal ends it early)
	stats     Stats

	// planted bug for checker tests: deliver a flow's chunks out of order.
	bugReorder bool
}

type host struct {
	idx   int
	name  string
	h     Host
	up    bool
	epoch uint64      // bumps on crash: events of dead endpoints are dropped
	ends  []*endpoint // live endpoints, for crash
}

type link struct {
	p         LinkParams
	blocked   bool
	clogUntil sched.Time
	busyUntil sched.Time
}

type endState uint8

const (
	stDialing endState = iota
	stOpen
	stDead
)

type endpoint struct {
	id     node.ConnID
	host   *host
	epoch  uint64 // host.epoch when created
	peer   *endpoint
	out    *flow // from this endpoint to peer; to is nil until the SYN lands
	state  endState
	hostIx int    // index in host.ends while live
	remote string // the dialed address, or the dialer's host name
	// lingering: closed by its core. Like the production shell, which keeps
	// draining a closed socket's input until the peer closes, it discards
	// late data instead of answering with an RST that would destroy the
	// replies it flushed before closing.
	lingering bool
}

type chunkKind uint8

const (
	ckData chunkKind = iota
	ckSynAck
	ckFIN
	ckRST
)

type chunk struct {
	kind chunkKind
	data []byte
	at   sched.Time
}

// flow is one direction of one connection.
type flow struct {
	n         *Network
	from, to  *endpoint
	q         []chunk
	head      int
	bytes     int // undelivered data bytes
	lastAt    sched.Time
	armed     bool   // an event for the head is scheduled
	gen       uint64 // invalidates a scheduled event after drop or re-arm
	isStalled bool   // the link is blocked; waiting in Network.stalled
	isClogged bool   // armed for its link's clog to end; in Network.clogged
	stallGen  uint64 // bumps when a stall ends, invalidating its timeout
	stalledAt sched.Time
	stallDead bool // the stall outlasted RetransmitTimeout: the sender's end is dead
	ready     bool // the sender may transmit: the connection is established
}

// New returns an empty network on queue q, drawing from rng.
func New(q *sched.Queue, rng *node.Rand, cfg Config) *Network {
	return &Network{
		q: q, rng: rng, cfg: cfg,
		byName:    make(map[string]*host),
		listeners: make(map[string]*host),
		ends:      make(map[node.ConnID]*endpoint),
	}
}

// Config returns the network's configuration.
func (n *Network) Config() Config { return n.cfg }

// Stats returns counters.
func (n *Network) Stats() Stats { return n.stats }

// AddHost registers a machine. Its links get the default parameters.
func (n *Network) AddHost(name string, h Host) {
	if _, ok := n.byName[name]; ok || strings.Contains(name, ":") {
		panic(fmt.Sprintf("netsim: bad or duplicate host name %q", name))
	}
	hs := &host{idx: len(n.hosts), name: name, h: h, up: true}
	n.hosts = append(n.hosts, hs)
	n.byName[name] = hs
	for i := range n.links {
		n.links[i] = append(n.links[i], link{p: n.cfg.Link})
	}
	row := make([]link, len(n.hosts))
	for i := range row {
		row[i] = link{p: n.cfg.Link}
	}
	n.links = append(n.links, row)
}

// Hosts returns host names in the order they were added.
func (n *Network) Hosts() []string {
	out := make([]string, len(n.hosts))
	for i, h := range n.hosts {
		out[i] = h.name
	}
	return out
}

func (n *Network) host(name string) *host {
	h, ok := n.byName[name]
	if !ok {
		panic(fmt.Sprintf("netsim: unknown host %q", name))
	}
	return h
}

// SetLink overrides the parameters of the link from -> to.
func (n *Network) SetLink(from, to string, p LinkParams) {
	n.links[n.host(from).idx][n.host(to).idx].p = p
}

// Listen makes host accept connections on addr ("host:port"; the host part
// must be the host's own name).
func (n *Network) Listen(hostName, addr string) {
	h := n.host(hostName)
	if hostOf(addr) != hostName {
		panic(fmt.Sprintf("netsim: host %s cannot listen on %s", hostName, addr))
	}
	n.listeners[addr] = h
}

// Unlisten stops accepting on addr.
func (n *Network) Unlisten(addr string) { delete(n.listeners, addr) }

func hostOf(addr string) string {
	if i := strings.LastIndexByte(addr, ':'); i >= 0 {
		return addr[:i]
	}
	return addr
}

// ---- connection API (what a node's Env calls) ----

// Dial opens a connection from hostName to addr and returns the dialer's
// endpoint ID. The host later gets EvConnected or EvClosed for it. Data sent
// before EvConnected waits and departs when the connection opens.
func (n *Network) Dial(hostName, addr string) node.ConnID {
	h := n.host(hostName)
	n.stats.Dials++
	c := n.newEndpoint(h, stDialing, addr)
	c.out = &flow{n: n, from: c}
	n.q.After(n.cfg.DialTimeout, dialTimeout{c}, 0)
	if target, ok := n.byName[hostOf(addr)]; ok {
		// The SYN travels now; what happens on arrival depends on the link
		// and the listener at that moment. A SYN to an unknown machine is
		// never answered.
		n.q.After(n.delay(h, target, 0), synArrival{n: n, c: c, target: target, addr: addr}, 0)
	}
	return c.id
}

// Send queues data on endpoint id of hostName. Unknown or dead IDs are
// ignored, as the contract requires.
func (n *Network) Send(hostName string, id node.ConnID, data []byte) {
	e := n.ends[id]
	if e == nil || e.host.name != hostName || e.state == stDead || len(data) == 0 {
		return
	}
	f := e.out
	if n.cfg.MaxQueueBytes > 0 && f.bytes+len(data) > n.cfg.MaxQueueBytes {
		n.reset(e, node.ErrReset)
		return
	}
	n.push(f, chunk{kind: ckData, data: data})
}

// Detach replaces the bytes of buf that are queued on endpoint id, not yet
// delivered, with copies of their own, so that the sender may overwrite buf
// (Env.RecycleSent: a real socket has copied them into the kernel). Bytes
// delivered already are the receiver's: the sender must not recycle a
// buffer once the network may have delivered from it.
func (n *Network) Detach(hostName string, id node.ConnID, buf []byte) {
	e := n.ends[id]
	if e == nil || e.host.name != hostName || len(buf) == 0 {
		return
	}
	f := e.out
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	hi := lo + uintptr(cap(buf))
	for i := f.head; i < len(f.q); i++ {
		c := &f.q[i]
		if c.kind != ckData || len(c.data) == 0 {
			continue
		}
		if p := uintptr(unsafe.Pointer(unsafe.SliceData(c.data))); p >= lo && p < hi {
			c.data = append([]byte(nil), c.data...)
		}
	}
}

// Close closes endpoint id gracefully: queued data goes first, then FIN. The
// host gets no event for its own close.
func (n *Network) Close(hostName string, id node.ConnID) {
	e := n.ends[id]
	if e == nil || e.host.name != hostName || e.state == stDead {
		return
	}
	n.kill(e)
	e.lingering = true
	n.push(e.out, chunk{kind: ckFIN})
}

// Reset aborts endpoint id: undelivered data in both directions is dropped,
// the host gets EvClosed{ErrReset}, and an RST travels to the peer.
func (n *Network) Reset(hostName string, id node.ConnID) {
	e := n.ends[id]
	if e == nil || e.host.name != hostName || e.state == stDead {
		return
	}
	n.reset(e, node.ErrReset)
}

// ---- faults ----

// CrashHost models the process on a host dying: its listeners go, its
// endpoints die without events, and its kernel sends RST to every peer (which
// a partition may delay or lose, leaving the peer half-open).
func (n *Network) CrashHost(name string) {
	h := n.host(name)
	h.up = false
	h.epoch++
	for addr, lh := range n.listeners { // order-independent: only deletes
		if lh == h {
			delete(n.listeners, addr)
		}
	}
	for len(h.ends) > 0 {
		e := h.ends[len(h.ends)-1]
		n.kill(e)
		n.sendRST(e)
	}
}

// RestartHost brings a crashed host's network stack back (listeners are
// re-registered by the node).
func (n *Network) RestartHost(name string) { n.host(name).up = true }

// Block stops traffic from -> to (one way). Connections stall; those stalled
// longer than RetransmitTimeout die.
func (n *Network) Block(from, to string) {
	n.links[n.host(from).idx][n.host(to).idx].blocked = true
}

// Unblock lets traffic from -> to flow again.
func (n *Network) Unblock(from, to string) {
	n.links[n.host(from).idx][n.host(to).idx].blocked = false
	n.resumeStalled()
}

// Blocked reports whether from -> to is blocked.
func (n *Network) Blocked(from, to string) bool {
	return n.links[n.host(from).idx][n.host(to).idx].blocked
}

// Partition blocks both directions between hosts of different groups. Hosts
// not in any group keep talking to everyone.
func (n *Network) Partition(groups ...[]string) {
	group := make([]int, len(n.hosts))
	for i := range group {
		group[i] = -1
	}
	for g, hs := range groups {
		for _, name := range hs {
			group[n.host(name).idx] = g
		}
	}
	for i := range n.hosts {
		for j := range n.hosts {
			if group[i] >= 0 && group[j] >= 0 && group[i] != group[j] {
				n.links[i][j].blocked = true
			}
		}
	}
}

// Heal unblocks and unclogs every link.
func (n *Network) Heal() {
	now := n.q.Now()
	for i := range n.links {
		for j := range n.links[i] {
			n.links[i][j].blocked = false
			if n.links[i][j].clogUntil > now {
				n.links[i][j].clogUntil = now
			}
		}
	}
	// A flow held by a clog is armed for the clog's old end: re-arm it for
	// now, or the heal would not reach it until then (keeper seed 130024859:
	// a 39 s clog outlived the heal and the liveness phase with it).
	for _, f := range n.clogged {
		if f.isClogged && f.armed && f.pending() > 0 {
			f.arm(max(f.q[f.head].at, now))
		}
		f.isClogged = false
	}
	clear(n.clogged)
	n.clogged = n.clogged[:0]
	n.resumeStalled()
}

// Clog holds traffic from -> to until the given time, without killing
// connections: a congested or flapping link.
func (n *Network) Clog(from, to string, until sched.Time) {
	l := &n.links[n.host(from).idx][n.host(to).idx]
	if until > l.clogUntil {
		l.clogUntil = until
	}
}

// ResetRandom resets one live connection chosen by r (a middlebox or kernel
// killing it), if there is any. It reports the endpoint it reset.
func (n *Network) ResetRandom(r *node.Rand) (node.ConnID, bool) {
	total := 0
	for _, h := range n.hosts {
		total += len(h.ends)
	}
	if total == 0 {
		return 0, false
	}
	k := r.IntN(total)
	for _, h := range n.hosts {
		if k < len(h.ends) {
			e := h.ends[k]
			n.reset(e, node.ErrReset)
			return e.id, true
		}
		k -= len(h.ends)
	}
	return 0, false
}

// LiveConns counts live endpoints (both ends of a connection count).
func (n *Network) LiveConns() int {
	total := 0
	for _, h := range n.hosts {
		total += len(h.ends)
	}
	return total
}

// ---- internals ----

func (n *Network) newEndpoint(h *host, st endState, remote string) *endpoint {
	n.nextID++
	e := &endpoint{id: n.nextID, host: h, epoch: h.epoch, state: st, remote: remote, hostIx: len(h.ends)}
	h.ends = append(h.ends, e)
	n.ends[e.id] = e
	return e
}

// kill marks e dead (no more events to its host) and forgets it.
func (n *Network) kill(e *endpoint) {
	if e.state == stDead {
		return
	}
	e.state = stDead
	if e.id == 0 {
		return // a refused server endpoint was never registered
	}
	h := e.host
	last := h.ends[len(h.ends)-1]
	h.ends[e.hostIx] = last
	last.hostIx = e.hostIx
	h.ends = h.ends[:len(h.ends)-1]
	delete(n.ends, e.id)
}

// deliver hands ev to e's host unless e belongs to an earlier incarnation.
func (n *Network) deliver(e *endpoint, ev node.Event) {
	if e.epoch == e.host.epoch {
		e.host.h.Deliver(ev)
	}
}

// sendRST replaces whatever e still had to send with an RST for its peer.
func (n *Network) sendRST(e *endpoint) {
	f := e.out
	f.drop()
	if f.to == nil {
		return // the SYN has not landed: there is no peer to tell
	}
	f.ready = true
	n.push(f, chunk{kind: ckRST})
}

// reset kills e, delivering err to its own host, drops undelivered data both
// ways, and sends RST to the peer.
func (n *Network) reset(e *endpoint, err error) {
	if e.state == stDead {
		return
	}
	n.stats.Resets++
	n.kill(e)
	if e.peer != nil {
		e.peer.out.drop()
	}
	n.sendRST(e)
	n.q.After(0, closedEvent{n: n, e: e, err: err}, 0)
}

type closedEvent struct {
	n   *Network
	e   *endpoint
	err error
}

func (c closedEvent) Fire(uint64) {
	c.n.deliver(c.e, node.Event{Kind: node.EvClosed, Conn: c.e.id, Err: c.err})
}

// delay samples the one-way delay for size bytes on from -> to, including
// the time to serialise them behind earlier traffic on a bandwidth-limited
// link.
func (n *Network) delay(from, to *host, size int) time.Duration {
	l := &n.links[from.idx][to.idx]
	d := l.p.Latency
	if l.p.Jitter > 0 {
		// Exponential extra delay, clamped so one unlucky draw does not stall
		// a connection for seconds.
		x := -math.Log(1-n.rng.Float64()) * float64(l.p.Jitter)
		d += time.Duration(math.Min(x, 20*float64(l.p.Jitter)))
	}
	if l.p.Bandwidth > 0 && size > 0 {
		now := n.q.Now()
		start := max(now, l.busyUntil)
		tx := time.Duration(int64(size) * int64(time.Second) / l.p.Bandwidth)
		l.busyUntil = start.Add(tx)
		d += l.busyUntil.Sub(now)
	}
	return d
}

// push appends c to f. Before the connection is established, chunks wait
// untimed; retime gives them departure times when it opens.
func (n *Network) push(f *flow, c chunk) {
	f.q = append(f.q, c)
	f.bytes += len(c.data)
	if !f.ready {
		return
	}
	f.time(len(f.q) - 1)
	if !f.armed && !f.isStalled {
		f.arm(f.q[f.head].at)
	}
}

// time gives chunk i of f its arrival time, after every earlier chunk's.
func (f *flow) time(i int) {
	n := f.n
	c := &f.q[i]
	at := n.q.Now().Add(n.delay(f.from.host, f.to.host, len(c.data)))
	if at <= f.lastAt {
		at = f.lastAt + 1
	}
	c.at = at
	f.lastAt = at
	n.stats.Chunks++
	n.stats.Bytes += uint64(len(c.data))
}

// open marks the flow established and sends what queued up before.
func (f *flow) open() {
	f.ready = true
	for i := f.head; i < len(f.q); i++ {
		f.time(i)
	}
	if f.pending() > 0 && !f.armed && !f.isStalled {
		f.arm(f.q[f.head].at)
	}
}

func (f *flow) arm(at sched.Time) {
	if now := f.n.q.Now(); at < now {
		at = now
	}
	f.armed = true
	f.gen++
	f.n.q.At(at, f, f.gen)
}

func (f *flow) pending() int { return len(f.q) - f.head }

// drop discards undelivered chunks.
func (f *flow) drop() {
	clear(f.q)
	f.q = f.q[:0]
	f.head = 0
	f.bytes = 0
	f.armed = false
	f.gen++
}

func (f *flow) pop() chunk {
	c := f.q[f.head]
	f.q[f.head] = chunk{}
	f.head++
	f.bytes -= len(c.data)
	if f.head == len(f.q) {
		f.q = f.q[:0]
		f.head = 0
	} else if f.head >= 64 && f.head*2 >= len(f.q) {
		k := copy(f.q, f.q[f.head:])
		clear(f.q[k:])
		f.q = f.q[:k]
		f.head = 0
	}
	return c
}

// Fire delivers the head of the flow, or stalls it behind a partition.
func (f *flow) Fire(gen uint64) {
	if gen != f.gen || !f.armed {
		return
	}
	f.armed = false
	n := f.n
	if f.pending() == 0 {
		return
	}
	now := n.q.Now()
	l := &n.links[f.from.host.idx][f.to.host.idx]
	if l.blocked {
		f.stall()
		return
	}
	if l.clogUntil > now {
		f.arm(l.clogUntil)
		if !f.isClogged {
			f.isClogged = true
			n.clogged = append(n.clogged, f)
		}
		return
	}
	f.isClogged = false
	if n.bugReorder && f.pending() > 1 && f.q[f.head+1].kind == ckData && n.rng.Chance(0.5) {
		f.q[f.head], f.q[f.head+1] = f.q[f.head+1], f.q[f.head]
	}
	to := f.to
	switch f.q[f.head].kind {
	case ckData:
		if to.state == stDead {
			f.drop()
			// A lingering socket drains quietly while the process that
			// closed it lives; otherwise the kernel answers with RST.
			if f.from.state != stDead && !(to.lingering && to.epoch == to.host.epoch) {
				n.sendRST(to)
			}
			return
		}
		data := f.nextData(now)
		n.deliver(to, node.Event{Kind: node.EvReceived, Conn: to.id, Data: data})
	case ckSynAck:
		f.pop()
		if to.state == stDialing {
			to.state = stOpen
			n.stats.Accepted++
			to.out.open()
			n.deliver(to, node.Event{Kind: node.EvConnected, Conn: to.id})
		} else if f.from.state != stDead {
			// The dialer gave up or crashed: its kernel rejects the SYN-ACK.
			n.reset(f.from, node.ErrReset)
		}
	case ckFIN, ckRST:
		c := f.pop()
		if to.state == stDead {
			break
		}
		err := node.ErrEOF
		if c.kind == ckRST {
			err = node.ErrReset
			if to.state == stDialing {
				err = node.ErrRefused
				n.stats.Refused++
			}
		}
		n.kill(to)
		to.out.drop()
		n.deliver(to, node.Event{Kind: node.EvClosed, Conn: to.id, Err: err})
	}
	if f.pending() > 0 && !f.armed && !f.isStalled {
		f.arm(max(f.q[f.head].at, now+1))
	}
}

// nextData takes the bytes of the next read from the head of the flow:
// usually one chunk, sometimes a prefix of it, sometimes it and the chunks
// arriving just after it. Receivers must reassemble frames either way.
func (f *flow) nextData(now sched.Time) []byte {
	n := f.n
	c := &f.q[f.head]
	if len(c.data) > 1 && n.rng.Chance(n.cfg.SplitChance) {
		k := 1 + n.rng.IntN(len(c.data)-1)
		part := c.data[:k:k] // capped: the receiver may append to it
		c.data = c.data[k:]
		f.bytes -= k
		c.at = now + 1 + sched.Time(n.rng.IntN(int(n.cfg.CoalesceWindow)+1))
		return part
	}
	first := f.pop()
	if f.pending() == 0 || !n.rng.Chance(n.cfg.CoalesceChance) {
		return first.data
	}
	limit := now.Add(n.cfg.CoalesceWindow)
	size := len(first.data)
	end := f.head
	for end < len(f.q) && f.q[end].kind == ckData && f.q[end].at <= limit {
		size += len(f.q[end].data)
		end++
	}
	if end == f.head {
		return first.data
	}
	buf := make([]byte, 0, size)
	buf = append(buf, first.data...)
	for range end - f.head { // pop may compact the queue: count, not index
		buf = append(buf, f.pop().data...)
	}
	return buf
}

// tcpMinRTO is Linux's minimum retransmission timeout (TCP_RTO_MIN): a
// lost segment is sent again this long plus a round trip after it was
// sent, then at doubling intervals.
const tcpMinRTO = 200 * time.Millisecond

func (f *flow) stall() {
	f.isStalled = true
	f.stallDead = false
	f.stalledAt = f.n.q.Now()
	f.n.stalled = append(f.n.stalled, f)
	f.n.q.After(f.n.cfg.RetransmitTimeout, retransmitTimeout{f: f, gen: f.stallGen}, 0)
}

// nextRetransmit is when a flow stalled since f.stalledAt next sends its
// head again, as TCP does (tcpMinRTO plus a round trip, doubling), and
// false if that comes after its RetransmitTimeout, which kills it first.
func (n *Network) nextRetransmit(f *flow) (sched.Time, bool) {
	now := n.q.Now()
	step := tcpMinRTO + 2*n.links[f.from.host.idx][f.to.host.idx].p.Latency
	at := f.stalledAt.Add(step)
	for at < now {
		step *= 2
		at = at.Add(step)
	}
	return at, at < f.stalledAt.Add(n.cfg.RetransmitTimeout)
}

func (n *Network) resumeStalled() {
	kept := n.stalled[:0]
	for _, f := range n.stalled {
		if n.links[f.from.host.idx][f.to.host.idx].blocked {
			kept = append(kept, f)
			continue
		}
		at := n.q.Now() // a dead flow's RST goes at once
		if !f.stallDead {
			var ok bool
			if at, ok = n.nextRetransmit(f); !ok {
				// Its timeout comes first, and resumes it (retransmitTimeout).
				kept = append(kept, f)
				continue
			}
		}
		f.resume(at)
	}
	clear(n.stalled[len(kept):])
	n.stalled = kept
}

// resume ends f's stall: what it holds gets through one latency after at.
// The caller takes f off Network.stalled.
func (f *flow) resume(at sched.Time) {
	f.isStalled = false
	f.stallGen++
	if f.pending() > 0 && !f.armed {
		f.arm(at.Add(f.n.delay(f.from.host, f.to.host, 0)))
	}
}

type retransmitTimeout struct {
	f   *flow
	gen uint64
}

func (r retransmitTimeout) Fire(uint64) {
	f := r.f
	if !f.isStalled || f.stallGen != r.gen {
		return
	}
	n := f.n
	n.stats.RetransmitTimeouts++
	// Stay in n.stalled with isStalled until the heal: a new RST pushed
	// below must not slip through the partition.
	f.stallDead = true
	f.drop()
	if f.from.state != stDead {
		n.reset(f.from, node.ErrTimeout)
	}
	if !n.links[f.from.host.idx][f.to.host.idx].blocked {
		// Healed while waiting for a retransmission that came too late
		// (resumeStalled kept it for this).
		n.stalled = slices.DeleteFunc(n.stalled, func(g *flow) bool { return g == f })
		f.resume(n.q.Now())
	}
}

type synArrival struct {
	n      *Network
	c      *endpoint // the dialer
	target *host
	addr   string
}

func (s synArrival) Fire(uint64) {
	n, c := s.n, s.c
	if c.state != stDialing {
		return // the dial timed out or the dialer crashed
	}
	if n.links[c.host.idx][s.target.idx].blocked {
		return // SYN lost; the dial timeout will fire
	}
	srv := &endpoint{host: s.target, epoch: s.target.epoch, peer: c, remote: c.host.name}
	srv.out = &flow{n: n, from: srv, to: c, ready: true, lastAt: n.q.Now()}
	c.peer = srv
	c.out.to = srv
	if n.listeners[s.addr] != s.target || !s.target.up {
		srv.state = stDead
		n.push(srv.out, chunk{kind: ckRST})
		return
	}
	n.nextID++
	srv.id = n.nextID
	srv.state = stOpen
	srv.hostIx = len(s.target.ends)
	s.target.ends = append(s.target.ends, srv)
	n.ends[srv.id] = srv
	// The SYN-ACK is the first segment of the flow back, so the dialer cannot
	// see the server's data before EvConnected.
	n.push(srv.out, chunk{kind: ckSynAck})
	n.deliver(srv, node.Event{Kind: node.EvAccepted, Conn: srv.id, Local: s.addr, Remote: c.host.name})
}

type dialTimeout struct{ c *endpoint }

func (d dialTimeout) Fire(uint64) {
	c := d.c
	if c.state != stDialing {
		return
	}
	n := c.out.n
	n.stats.DialTimeouts++
	n.kill(c)
	n.sendRST(c)
	n.deliver(c, node.Event{Kind: node.EvClosed, Conn: c.id, Err: node.ErrTimeout})
}
