package sim

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"time"

	"herd/disk"
	"herd/node"
	"herd/sim/sched"
)

// Node is one simulated machine: the harness around a core. It implements
// node.Env for the core and netsim.Host for the network.
type Node struct {
	NodeSpec
	Index int
	// FS is the machine's disk. A crash replaces it with its crash image.
	FS *disk.SimFS

	w           *World
	m           node.Machine
	up, paused  bool
	incarnation uint64
	haltReason  string // set by Env.Halt during a Step
	lastHalt    string
	inStep      bool
	backlog     []held // events that arrived while paused
	draining    bool   // drainHandler is delivering the backlog
	gate        *node.SendGate
	clock       clock
	rng         *node.Rand // the core's Env.Rand
	diskRng     *node.Rand // crash images, disk latency, drift
	timers      map[node.TimerName]*simTimer
	nextOp      node.OpID
	// The disk queue, and the background lane beside it: background ops
	// (node.DiskOp.Background) move there when they reach the head of the
	// queue.
	diskLane, bgLane diskLane
	// diskFaultUntil ends the fault schedule's disk-error window, if any.
	diskFaultUntil sched.Time
	// bootCorruptions is how many recorded corruptions its disk had when
	// the current incarnation booted (corruption gates use it).
	bootCorruptions int
	// crashOnWrite: the fault schedule crashes the node (and, for a power
	// outage, the rest of crashGroup with it) as soon as its next write
	// reaches the page cache.
	crashOnWrite bool
	crashGroup   []*Node
}

type held struct {
	ev       node.Event
	timerGen uint64
}

type pendingOp struct {
	id node.OpID
	op node.DiskOp
}

// Machine returns the running core (nil while the node is down).
func (n *Node) Machine() node.Machine { return n.m }

// Up reports whether the process is running (it may be paused).
func (n *Node) Up() bool { return n.up }

// Paused reports whether the process is stopped (SIGSTOP, a long GC pause).
func (n *Node) Paused() bool { return n.paused }

// Incarnation counts boots, starting at 1.
func (n *Node) Incarnation() uint64 { return n.incarnation }

// LastHalt is the reason given by the last Env.Halt, if any.
func (n *Node) LastHalt() string { return n.lastHalt }

// LocalTime is the node's monotonic clock reading now.
func (n *Node) LocalTime() node.Time { return n.clock.local(n.w.Q.Now()) }

// ---- lifecycle ----

// BootCorruptions is how many recorded corruptions the disk had when the
// current incarnation booted.
func (n *Node) BootCorruptions() int { return n.bootCorruptions }

func (n *Node) boot() {
	n.incarnation++
	n.bootCorruptions = len(n.FS.Corruptions())
	n.up = true
	n.paused = false
	n.haltReason = ""
	n.gate = node.NewSendGate(gateTransport{n})
	n.timers = make(map[node.TimerName]*simTimer)
	n.diskLane.reset()
	n.bgLane.reset()
	n.nextOp = 0
	for _, addr := range n.Listen {
		n.w.Net.Listen(n.Name, addr)
	}
	n.m = n.Factory(n)
	n.w.Q.After(0, startHandler{n}, n.incarnation)
}

type startHandler struct{ n *Node }

func (s startHandler) Fire(inc uint64) {
	if inc == s.n.incarnation {
		s.n.deliver(node.Event{Kind: node.EvStart}, 0)
	}
}

// down stops the process. With crash, the machine lost power: the disk is
// replaced by its crash image. Without, only the process died (Halt, kill):
// the page cache, and so every completed write, survives.
func (n *Node) down(crash bool) {
	if !n.up {
		return
	}
	n.w.Net.CrashHost(n.Name)
	if crash {
		n.FS = n.FS.Crash(n.diskRng)
	}
	n.up = false
	n.paused = false
	n.backlog = nil
	for _, t := range n.timers { // order-independent: only disarms
		t.armed = false
		t.gen++
	}
	n.timers = nil
	n.diskLane.reset()
	n.bgLane.reset()
	n.m = nil
	n.gate = nil
	if crash && n.OnPowerLoss != nil {
		n.OnPowerLoss()
	}
	if n.OnDown != nil {
		n.OnDown()
	}
}

// Crash kills the machine (power loss: unsynced data may be lost or torn).
func (n *Node) Crash() {
	if n.up {
		n.w.note("crash %s", n.Name)
		n.down(true)
	}
}

// Kill kills only the process (kill -9): completed writes survive.
func (n *Node) Kill() {
	if n.up {
		n.w.note("kill %s", n.Name)
		n.down(false)
	}
}

// Restart boots a downed node.
func (n *Node) Restart() {
	if n.up {
		return
	}
	n.w.note("restart %s", n.Name)
	n.w.Net.RestartHost(n.Name)
	n.boot()
}

// Pause stops delivering events to the node; its clock keeps running.
func (n *Node) Pause() {
	if n.up && !n.paused {
		n.w.note("pause %s", n.Name)
		n.paused = true
	}
}

// Resume delivers what arrived during the pause, in arrival order.
func (n *Node) Resume() {
	if !n.up || !n.paused {
		return
	}
	n.w.note("resume %s", n.Name)
	n.paused = false
	n.w.Q.After(0, drainHandler{n}, n.incarnation)
}

type drainHandler struct{ n *Node }

func (d drainHandler) Fire(inc uint64) {
	n := d.n
	if inc != n.incarnation {
		return
	}
	n.draining = true
	for len(n.backlog) > 0 && n.up && !n.paused && inc == n.incarnation && !n.w.halted {
		h := n.backlog[0]
		n.backlog = n.backlog[1:]
		n.deliver(h.ev, h.timerGen)
	}
	n.draining = false
}

// deliver hands one event to the core. timerGen is the generation of the
// timer arm an EvTimer came from: a timer re-armed or cancelled since must
// not fire.
func (n *Node) deliver(ev node.Event, timerGen uint64) {
	if !n.up {
		return
	}
	// Between Resume and the drain, events queue behind the backlog: one
	// scheduled for the very instant of the resume must not overtake what
	// arrived during the pause (demo seed 1043 got a connection's data
	// before its accept once a heal at the same instant re-armed the flow).
	if n.paused || (len(n.backlog) > 0 && !n.draining) {
		n.backlog = append(n.backlog, held{ev, timerGen})
		return
	}
	if ev.Kind == node.EvTimer {
		if t := n.timers[ev.Timer]; t == nil || t.gen != timerGen {
			return
		}
	}
	// The shell's bookkeeping happens when the process handles the event,
	// not when the device finishes: a paused process sends nothing.
	switch ev.Kind {
	case node.EvDiskDone:
		n.gate.Completed(ev.Op, ev.OpKind, ev.Err)
	case node.EvClosed:
		n.gate.Forget(ev.Conn)
	}
	n.w.record(n, &ev)
	n.inStep = true
	n.m.Step(ev)
	n.inStep = false
	if n.haltReason != "" {
		n.lastHalt = n.haltReason
		n.w.note("halt %s: %s", n.Name, n.haltReason)
		n.down(false)
		n.w.superviseHalt(n)
	}
}

// Deliver implements netsim.Host.
func (n *Node) Deliver(ev node.Event) { n.deliver(ev, 0) }

// ---- node.Env ----

// acting checks the contract for an Env call with effects and reports whether
// it should take effect: not after Halt in the same Step.
func (n *Node) acting(what string) bool {
	if !n.inStep {
		panic(fmt.Sprintf("sim: %s called on %s outside Step: cores may only act while handling an event", what, n.Name))
	}
	return n.haltReason == ""
}

func (n *Node) Now() node.Time   { return n.clock.local(n.w.Q.Now()) }
func (n *Node) WallClock() int64 { return n.clock.wall(n.w.Q.Now()) }
func (n *Node) Rand() *node.Rand { return n.rng }
func (n *Node) Logf(format string, args ...any) {
	if n.w.log != nil {
		fmt.Fprintf(n.w.log, "%14v %-4s log       %s\n", time.Duration(n.w.Q.Now()), n.Name,
			strings.TrimRight(fmt.Sprintf(format, args...), "\n"))
	}
}

func (n *Node) Dial(addr string) node.ConnID {
	if !n.acting("Dial") {
		return 0
	}
	return n.w.Net.Dial(n.Name, addr)
}

func (n *Node) Send(c node.ConnID, data []byte) {
	if !n.acting("Send") {
		return
	}
	n.gate.Send(c, data)
}

func (n *Node) SendAfter(c node.ConnID, data []byte, op node.OpID) {
	if !n.acting("SendAfter") {
		return
	}
	n.gate.SendAfter(c, data, op)
}

func (n *Node) Close(c node.ConnID) {
	if !n.acting("Close") {
		return
	}
	n.gate.Close(c)
}

// Recycle overwrites data with a pattern no Kafka or ZooKeeper frame
// checks out with, so that a core that recycles a buffer it still uses
// reads (or writes to disk, or sends) garbage a checker sees.
func (n *Node) Recycle(data []byte) {
	if !n.acting("Recycle") {
		return
	}
	poison(data)
}

func poison(data []byte) {
	data = data[:cap(data)]
	for i := range data {
		data[i] = 0xA5
	}
}

// RecycleSent lets the bytes of data still in flight on c keep copies of
// their own, as a kernel's socket buffer would, and then overwrites data
// as Recycle does. Held behind c's held sends in the gate, like them.
func (n *Node) RecycleSent(c node.ConnID, data []byte) {
	if !n.acting("RecycleSent") {
		return
	}
	n.gate.RecycleSent(c, data)
}

func (n *Node) Halt(reason string) {
	if !n.acting("Halt") {
		return
	}
	if reason == "" {
		reason = "halt"
	}
	n.haltReason = reason
}

type gateTransport struct{ n *Node }

func (g gateTransport) Send(c node.ConnID, data []byte) { g.n.w.Net.Send(g.n.Name, c, data) }
func (g gateTransport) Close(c node.ConnID)             { g.n.w.Net.Close(g.n.Name, c) }
func (g gateTransport) Reset(c node.ConnID)             { g.n.w.Net.Reset(g.n.Name, c) }
func (g gateTransport) RecycleSent(c node.ConnID, data []byte) {
	g.n.w.Net.Detach(g.n.Name, c, data)
	poison(data)
}

// ---- timers ----

type simTimer struct {
	n        *Node
	name     node.TimerName
	gen      uint64
	armed    bool
	deadline node.Time // on the node's clock
}

func (n *Node) SetTimer(name node.TimerName, d time.Duration) {
	if !n.acting("SetTimer") {
		return
	}
	t := n.timers[name]
	if t == nil {
		t = &simTimer{n: n, name: name}
		n.timers[name] = t
	}
	t.deadline = n.Now().Add(max(d, 0))
	t.armed = true
	t.gen++
	n.w.Q.At(n.clock.simTimeOf(t.deadline, n.w.Q.Now()), t, t.gen)
}

func (n *Node) CancelTimer(name node.TimerName) {
	if !n.acting("CancelTimer") {
		return
	}
	if t := n.timers[name]; t != nil {
		t.armed = false
		t.gen++
	}
}

func (t *simTimer) Fire(gen uint64) {
	n := t.n
	if gen != t.gen || !t.armed || !n.up {
		return
	}
	now := n.w.Q.Now()
	if n.clock.local(now) < t.deadline {
		// The clock was slowed after the timer was armed: not due yet.
		n.w.Q.At(n.clock.simTimeOf(t.deadline, now), t, gen)
		return
	}
	t.armed = false
	n.deliver(node.Event{Kind: node.EvTimer, Timer: t.name}, gen)
}

// rescheduleTimers re-arms every pending timer after the clock changed pace
// or jumped. Names are sorted so the reschedule order (and with it the queue's
// tie-breaks) is deterministic.
func (n *Node) rescheduleTimers() {
	names := make([]node.TimerName, 0, len(n.timers))
	for name, t := range n.timers { // order-independent: sorted below
		if t.armed {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	now := n.w.Q.Now()
	for _, name := range names {
		t := n.timers[name]
		t.gen++
		n.w.Q.At(n.clock.simTimeOf(t.deadline, now), t, t.gen)
	}
}

// ---- clock ----

// clock maps simulated true time to a node's clocks: a monotonic clock
// running at 1+ppm/1e6 of true speed, which may jump forward, and a wall clock
// that follows it plus an offset that may jump either way. Integer arithmetic
// keeps replay exact across platforms.
type clock struct {
	ppm          int64 // drift in parts per million
	base         node.Time
	simBase      sched.Time
	wallEpochMs  int64
	wallOffsetMs int64
}

func mulDiv(a, b, c uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	q, _ := bits.Div64(hi, lo, c)
	return q
}

func (c *clock) local(now sched.Time) node.Time {
	return c.base + node.Time(mulDiv(uint64(now-c.simBase), uint64(1_000_000+c.ppm), 1_000_000))
}

func (c *clock) wall(now sched.Time) int64 {
	return c.wallEpochMs + int64(c.local(now))/1e6 + c.wallOffsetMs
}

// simTimeOf returns the earliest true time at which the local clock reads at
// least deadline.
func (c *clock) simTimeOf(deadline node.Time, now sched.Time) sched.Time {
	if c.local(now) >= deadline {
		return now
	}
	delta := uint64(deadline - c.base)
	d := mulDiv(delta, 1_000_000, uint64(1_000_000+c.ppm))
	t := c.simBase + sched.Time(d)
	for c.local(t) < deadline { // rounding
		t++
	}
	return max(t, now)
}

func (c *clock) rebase(now sched.Time) {
	c.base = c.local(now)
	c.simBase = now
}

// SetDrift sets the node's clock drift in parts per million.
func (n *Node) SetDrift(ppm int64) {
	if ppm <= -1_000_000/2 {
		panic("sim: drift below -50%")
	}
	now := n.w.Q.Now()
	n.clock.rebase(now)
	n.clock.ppm = ppm
	n.w.note("drift %s %+dppm", n.Name, ppm)
	if n.up {
		n.rescheduleTimers()
	}
}

// JumpClock moves the node's monotonic clock forward by d (a VM resumed from
// suspension) and its wall clock by d+wallExtra (NTP stepping it too).
func (n *Node) JumpClock(d time.Duration, wallExtra time.Duration) {
	if d < 0 {
		panic("sim: the monotonic clock never goes back")
	}
	now := n.w.Q.Now()
	n.clock.rebase(now)
	n.clock.base = n.clock.base.Add(d)
	n.clock.wallOffsetMs += wallExtra.Milliseconds()
	n.w.note("clock-jump %s +%v wall%+v", n.Name, d, wallExtra)
	if n.up {
		n.rescheduleTimers()
	}
}

// ---- disk ----

func (n *Node) Disk(op node.DiskOp) node.OpID {
	if !n.acting("Disk") {
		return 0
	}
	n.nextOp++
	id := n.nextOp
	if op.InBackground() {
		n.gate.SubmittedBackground(id, op.Kind)
	} else {
		n.gate.Submitted(id, op.Kind)
	}
	n.diskLane.q = append(n.diskLane.q, pendingOp{id, op})
	if !n.diskLane.busy {
		n.startDiskOp()
	}
	return id
}

// diskLane is one of a node's device queues. Each runs one operation at a
// time, in order.
type diskLane struct {
	q    []pendingOp
	busy bool
	done diskHandler
}

func (l *diskLane) reset() { l.q, l.busy = nil, false }

// startDiskOp starts the head of the queue. The disk does one operation at a
// time, so completions come in submission order, as the contract promises.
// Background ops at the head, whose predecessors have all completed, move
// to the background lane instead.
func (n *Node) startDiskOp() {
	fg, bg := &n.diskLane, &n.bgLane
	for len(fg.q) > 0 && fg.q[0].op.InBackground() {
		bg.q = append(bg.q, fg.q[0])
		fg.q[0] = pendingOp{}
		fg.q = fg.q[1:]
		if !bg.busy {
			n.startOp(bg)
		}
	}
	if len(fg.q) == 0 {
		fg.busy = false
		return
	}
	n.startOp(fg)
}

func (n *Node) startOp(l *diskLane) {
	l.busy = true
	lat := n.w.params.Disk.latency(l.q[0].op, n.diskRng)
	n.w.Q.After(lat, l.done, n.incarnation)
}

// runAhead models the production shell's disk worker, which goes on to the
// ops queued behind a failed one while the loop has yet to handle its
// completion: they take effect (a write behind a failed fsync reaches the
// page cache, a sync behind it makes that durable) before the core can
// react to the failure, which it usually does by halting. failed is the
// failed op's completion, already executed and taken off l. The lane runs
// its queue up to the first background op (which the normal path hands to
// the background lane), then the completions are delivered in order until
// the core halts. A crash armed for the next write strikes there, as in
// the normal path.
func (n *Node) runAhead(l *diskLane, failed node.Event, inc uint64) {
	evs := []node.Event{failed}
	for len(l.q) > 0 && !l.q[0].op.InBackground() {
		p := l.q[0]
		l.q[0] = pendingOp{}
		l.q = l.q[1:]
		ev := disk.Exec(n.FS, p.id, p.op)
		if n.crashOnWrite && p.op.Kind == node.OpWrite && ev.Err == nil {
			n.w.faults.crashNow(n)
			return
		}
		evs = append(evs, ev)
	}
	n.w.note("disk of %s ran %d ops past a failed %s before the process learned of it", n.Name, len(evs)-1, failed.OpKind)
	for _, ev := range evs {
		n.deliver(ev, 0)
		if !n.up || inc != n.incarnation {
			return // the core halted while handling a completion
		}
	}
	n.nextInLane(l)
}

// nextInLane starts the next op of l, whose last op has completed.
func (n *Node) nextInLane(l *diskLane) {
	l.busy = false
	switch {
	case len(l.q) == 0:
	case l == &n.bgLane:
		n.startOp(l)
	default:
		n.startDiskOp()
	}
}

// diskHandler completes the head of the disk queue, or of the background
// lane (bg).
type diskHandler struct {
	n  *Node
	bg bool
}

func (h diskHandler) Fire(inc uint64) {
	n := h.n
	l := &n.diskLane
	if h.bg {
		l = &n.bgLane
	}
	if inc != n.incarnation || !n.up || len(l.q) == 0 {
		return
	}
	p := l.q[0]
	l.q[0] = pendingOp{}
	l.q = l.q[1:]
	if n.diskFaultUntil != 0 && n.w.Q.Now() >= n.diskFaultUntil {
		n.diskFaultUntil = 0
		n.FS.SetFaults(disk.Faults{}, nil)
	}
	// The operation takes effect when it completes: a crash before then
	// loses it, like a write still queued in the device.
	ev := disk.Exec(n.FS, p.id, p.op)
	if n.crashOnWrite && p.op.Kind == node.OpWrite && ev.Err == nil {
		n.w.faults.crashNow(n) // before the process even learns the write is done
		return
	}
	if ev.Err != nil && n.diskRng.Chance(0.5) {
		n.runAhead(l, ev, inc)
		return
	}
	n.deliver(ev, 0)
	if !n.up || inc != n.incarnation {
		return // the core halted while handling the completion
	}
	n.nextInLane(l)
}
