package sim

import (
	"fmt"
	"math"
	"slices"
	"time"

	"herd/disk"
	"herd/node"
	"herd/sim/sched"
)

// nemesis is the fault schedule of the safety phase: one Poisson process per
// enabled fault kind, each drawing from its own stream.
type nemesis struct {
	w      *World
	rng    *node.Rand
	active bool
	kinds  []*faultKind
}

type faultKind struct {
	nm     *nemesis
	name   string
	mean   time.Duration
	inject func()
}

func newNemesis(w *World) *nemesis {
	nm := &nemesis{w: w, rng: stream(w.Seed, "nemesis", 0), active: true}
	f := w.params.Faults
	add := func(name string, mean time.Duration, inject func()) {
		if mean > 0 {
			nm.kinds = append(nm.kinds, &faultKind{nm: nm, name: name, mean: mean, inject: inject})
		}
	}
	add("crash", f.Crash, nm.crash)
	add("kill", f.Kill, nm.kill)
	add("pause", f.Pause, nm.pause)
	add("clock", f.Clock, nm.clock)
	add("partition", f.Partition, nm.partition)
	add("clog", f.Clog, nm.clog)
	add("conn-reset", f.ConnReset, nm.connReset)
	add("disk-errors", f.DiskErrors, nm.diskErrors)
	add("corruption", f.Corruption, nm.corruption)
	add("misdirect", f.Misdirect, nm.misdirect)
	add("wipe", f.Wipe, nm.wipe)
	for _, k := range nm.kinds {
		k.schedule()
	}
	return nm
}

func (k *faultKind) schedule() {
	x := -math.Log(1-k.nm.rng.Float64()) * float64(k.mean)
	k.nm.w.Q.After(time.Duration(x), k, 0)
}

func (k *faultKind) Fire(uint64) {
	if !k.nm.active {
		return
	}
	k.inject()
	k.schedule()
}

// after runs fn after d unless the safety phase has ended (the heal at the
// start of the liveness phase undoes everything at once).
func (nm *nemesis) after(d time.Duration, fn func()) {
	nm.w.Q.After(d, funcHandler(func() {
		if nm.active {
			fn()
		}
	}), 0)
}

type funcHandler func()

func (f funcHandler) Fire(uint64) { f() }

// targets returns the nodes the fault schedule may crash, kill or pause.
func (nm *nemesis) targets(wantUp bool) []*Node {
	var out []*Node
	for _, n := range nm.w.Nodes {
		if (!n.Client || nm.w.params.Faults.ClientShare > 0) && n.up == wantUp {
			out = append(out, n)
		}
	}
	return out
}

// pickTarget picks a node of ns, a client only FaultRates.ClientShare of
// the time when ns holds both kinds, so that the servers keep most of the
// schedule.
func (nm *nemesis) pickTarget(ns []*Node) *Node {
	var servers, clients []*Node
	for _, n := range ns {
		if n.Client {
			clients = append(clients, n)
		} else {
			servers = append(servers, n)
		}
	}
	if len(clients) > 0 && (len(servers) == 0 || nm.rng.Chance(nm.w.params.Faults.ClientShare)) {
		return nm.pick(clients)
	}
	return nm.pick(servers)
}

func (nm *nemesis) pick(ns []*Node) *Node {
	if len(ns) == 0 {
		return nil
	}
	return ns[nm.rng.IntN(len(ns))]
}

// crash powers a node off: now, or (half the time) at the worst moment, the
// instant its next write reaches the page cache and before anything syncs
// it. Random crash times rarely land in the short window between a write and
// its fsync; that window is where durability bugs live.
func (nm *nemesis) crash() {
	up := nm.targets(true)
	if len(up) >= 2 && nm.rng.Chance(0.25) {
		// A power outage takes down a rack: several servers at the same
		// instant, each losing what it had not synced. This is what exposes
		// acknowledgements that outran the disk, since a single crashed
		// server is covered by the others' copies.
		nm.rng.Shuffle(len(up), func(i, j int) { up[i], up[j] = up[j], up[i] })
		group := up[:2+nm.rng.IntN(len(up)-1)]
		names := make([]string, len(group))
		for i, n := range group {
			names[i] = n.Name
		}
		if nm.rng.Chance(0.5) {
			nm.w.note("power outage: %v", names)
			nm.crashGroup(group)
			return
		}
		// Or at the worst moment: the instant any of them completes a write.
		nm.w.note("arm power outage %v at the next write", names)
		for _, n := range group {
			n.crashOnWrite = true
			n.crashGroup = group
		}
		nm.after(time.Second, func() {
			if group[0].crashOnWrite {
				nm.crashGroup(group)
			}
		})
		return
	}
	n := nm.pickTarget(up)
	if n == nil {
		return
	}
	if !nm.rng.Chance(0.5) {
		nm.crashNow(n)
		return
	}
	n.crashOnWrite = true
	nm.w.note("arm crash %s after its next write", n.Name)
	nm.after(time.Second, func() {
		if n.crashOnWrite {
			nm.crashNow(n) // it never wrote: crash anyway
		}
	})
}

func (nm *nemesis) crashNow(n *Node) {
	if n.crashGroup != nil {
		nm.crashGroup(n.crashGroup)
		return
	}
	n.crashOnWrite = false
	n.Crash()
	nm.after(nm.w.params.Faults.Downtime.draw(nm.rng), n.Restart)
}

func (nm *nemesis) crashGroup(group []*Node) {
	for _, n := range group {
		n.crashOnWrite = false
		n.crashGroup = nil
	}
	for _, n := range group {
		nm.crashNow(n)
	}
}

func (nm *nemesis) kill() {
	if n := nm.pickTarget(nm.targets(true)); n != nil {
		n.Kill()
		nm.after(nm.w.params.Faults.Downtime.draw(nm.rng), n.Restart)
	}
}

func (nm *nemesis) pause() {
	var ns []*Node
	for _, n := range nm.targets(true) {
		if !n.paused {
			ns = append(ns, n)
		}
	}
	if n := nm.pickTarget(ns); n != nil {
		n.Pause()
		nm.after(nm.w.params.Faults.Outage.draw(nm.rng), n.Resume)
	}
}

func (nm *nemesis) clock() {
	n := nm.pick(nm.w.Nodes)
	if nm.rng.Chance(0.3) && nm.w.params.MaxDriftPPM > 0 {
		d := nm.w.params.MaxDriftPPM
		n.SetDrift(int64(nm.rng.Uint64N(uint64(2*d+1))) - d)
		return
	}
	jump := time.Duration(nm.rng.Uint64N(uint64(2 * time.Second)))
	wall := time.Duration(nm.rng.Uint64N(uint64(10*time.Second))) - 5*time.Second
	n.JumpClock(jump, wall)
}

// partition picks one of the classic shapes among all hosts (clients
// included: a client cut off from its server is a fault too).
func (nm *nemesis) partition() {
	w := nm.w
	hosts := w.Net.Hosts()
	if len(hosts) < 2 {
		return
	}
	servers := w.Servers()
	names := func(ns []*Node) []string {
		out := make([]string, len(ns))
		for i, n := range ns {
			out[i] = n.Name
		}
		return out
	}
	shuffled := append([]string(nil), hosts...)
	nm.rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	switch nm.rng.IntN(4) {
	case 0: // random halves
		k := 1 + nm.rng.IntN(len(shuffled)-1)
		w.Net.Partition(shuffled[:k], shuffled[k:])
		w.note("partition halves %v | %v", shuffled[:k], shuffled[k:])
	case 1: // isolate one server from everyone
		if len(servers) == 0 {
			return
		}
		victim := nm.pick(servers).Name
		var rest []string
		for _, h := range hosts {
			if h != victim {
				rest = append(rest, h)
			}
		}
		w.Net.Partition([]string{victim}, rest)
		w.note("partition isolate %s", victim)
	case 2: // one way: a host can send but not receive from another
		a, b := shuffled[0], shuffled[1]
		w.Net.Block(a, b)
		w.note("partition one-way %s -/-> %s", a, b)
	case 3: // bridge: two halves that only one server can talk to both of
		if len(servers) < 3 {
			return
		}
		sv := names(servers)
		nm.rng.Shuffle(len(sv), func(i, j int) { sv[i], sv[j] = sv[j], sv[i] })
		bridge := sv[0]
		k := 1 + nm.rng.IntN(len(sv)-2)
		left, right := sv[1:1+k], sv[1+k:]
		for _, a := range left {
			for _, b := range right {
				w.Net.Block(a, b)
				w.Net.Block(b, a)
			}
		}
		w.note("partition bridge %v <- %s -> %v", left, bridge, right)
	}
	nm.after(w.params.Faults.Outage.draw(nm.rng), func() {
		w.note("heal partitions")
		w.Net.Heal()
	})
}

func (nm *nemesis) clog() {
	hosts := nm.w.Net.Hosts()
	if len(hosts) < 2 {
		return
	}
	a := hosts[nm.rng.IntN(len(hosts))]
	b := hosts[nm.rng.IntN(len(hosts))]
	until := nm.w.Q.Now().Add(nm.w.params.Faults.Outage.draw(nm.rng))
	nm.w.Net.Clog(a, b, until)
	nm.w.note("clog %s -> %s until %v", a, b, until)
}

func (nm *nemesis) connReset() {
	if id, ok := nm.w.Net.ResetRandom(nm.rng); ok {
		nm.w.note("reset conn %d", id)
	}
}

func (nm *nemesis) diskErrors() {
	n := nm.pick(slices.DeleteFunc(nm.targets(true), func(n *Node) bool { return n.Client })) // clients use no disk
	if n == nil {
		return
	}
	p := nm.w.params.Faults.DiskErrorRate
	n.FS.SetFaults(disk.Faults{ReadErr: p, WriteErr: p, SyncErr: p}, n.diskRng)
	n.diskFaultUntil = nm.w.Q.Now().Add(nm.w.params.Faults.Outage.draw(nm.rng))
	nm.w.note("disk-errors %s p=%.3f until %v", n.Name, p, n.diskFaultUntil)
}

// CorruptionGate lets a scenario bound disk corruption the way TigerBeetle's
// fault atlas does: a replicated system survives corruption of a minority,
// not of every copy at once, so the schedule corrupts only where the
// scenario says the rest of the cluster still holds good copies.
type CorruptionGate interface {
	MayCorrupt(n *Node) bool
}

func (nm *nemesis) corruptible() *Node {
	var ns []*Node
	gate, _ := nm.w.checks.(CorruptionGate)
	for _, n := range nm.w.Servers() {
		if gate == nil || gate.MayCorrupt(n) {
			ns = append(ns, n)
		}
	}
	return nm.pick(ns)
}

func (nm *nemesis) corruption() {
	n := nm.corruptible()
	if n == nil {
		return
	}
	if path, off, ok := n.FS.CorruptRandom(nm.rng); ok {
		nm.w.note("corrupt %s %s@%d", n.Name, path, off)
	}
}

func (nm *nemesis) misdirect() {
	if n := nm.corruptible(); n != nil {
		n.FS.MisdirectNextWrite()
		nm.w.note("misdirect next write on %s", n.Name)
	}
}

// WipeAware scenarios learn when a server's disk was replaced, so they can
// restart it the way an operator would (herd's Rejoin).
type WipeAware interface {
	Wiped(n *Node)
}

// wipe replaces a server's disk with a blank one: the machine loses power,
// its disk is swapped, and it comes back empty.
func (nm *nemesis) wipe() {
	n := nm.corruptible()
	if n == nil {
		return
	}
	nm.w.note("wipe %s", n.Name)
	if wa, ok := nm.w.checks.(WipeAware); ok {
		wa.Wiped(n)
	}
	n.Crash()
	n.FS = disk.NewSimFS()
	nm.after(nm.w.params.Faults.Downtime.draw(nm.rng), n.Restart)
}

// heal ends the safety phase: no new faults, every node running, every link
// whole, every disk healthy. Clock drift stays: real clocks never agree.
func (nm *nemesis) heal() {
	nm.active = false
	w := nm.w
	for _, n := range w.Nodes {
		n.crashOnWrite = false
		n.crashGroup = nil
	}
	w.note("heal all: liveness phase")
	w.Net.Heal()
	for _, n := range w.Nodes {
		n.FS.SetFaults(disk.Faults{}, nil)
		n.diskFaultUntil = 0
		if !n.up {
			n.Restart()
		} else if n.paused {
			n.Resume()
		}
	}
}

// superviseHalt restarts a node that halted itself, as systemd would.
func (w *World) superviseHalt(n *Node) {
	inc := n.incarnation
	w.Q.After(w.params.RestartDelay, funcHandler(func() {
		if !n.up && n.incarnation == inc {
			w.faults.powerLossWhileDown(n)
			n.Restart()
		}
	}), 0)
}

// powerLossWhileDown: a quarter of the time, while crashes are on, the
// machine of a halted server loses power before the server is back (a rack
// outage; an operator power-cycling a server whose disk failed), so what
// the halted process wrote and never synced is lost or torn. Without this a
// halted server always came back to its page cache, and the window between
// a failed fsync (on which the server halts) and its next recovery's syncs
// was reached only by a pause and a power outage together: once in 20,000
// consensus seeds (144577706).
func (nm *nemesis) powerLossWhileDown(n *Node) {
	if nm == nil || !nm.active || nm.w.params.Faults.Crash <= 0 || !nm.rng.Chance(0.25) {
		return
	}
	nm.w.note("power loss at %s while it is down", n.Name)
	n.FS = n.FS.Crash(n.diskRng)
	if n.OnPowerLoss != nil {
		n.OnPowerLoss()
	}
}

var _ sched.Handler = funcHandler(nil)

func (nm *nemesis) String() string {
	s := ""
	for _, k := range nm.kinds {
		s += fmt.Sprintf("%s/%v ", k.name, k.mean.Round(time.Millisecond))
	}
	return s
}
