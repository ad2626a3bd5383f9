// Package sim runs herd's cores deterministically: many nodes and clients in
// one goroutine, on virtual time (sim/sched), a simulated network (netsim) and
// simulated disks (disk.SimFS), all drawn from one seed. The same seed replays
// the same run bit for bit; World.TraceHash is the proof.
package sim

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	"github.com/cespare/xxhash/v2"

	"herd/disk"
	"herd/netsim"
	"herd/node"
	"herd/node/raft"
	"herd/sim/sched"
)

// FailureKind classifies why a run failed; herd sim exits with a code per
// kind, as TigerBeetle's VOPR does, so sweeps can tell them apart.
type FailureKind int

const (
	// FailCrash: a core panicked (or the harness caught a contract breach).
	FailCrash FailureKind = iota + 1
	// FailLiveness: the system did not converge after faults were healed.
	FailLiveness
	// FailCorrectness: a checker found a safety violation.
	FailCorrectness
)

func (k FailureKind) String() string {
	switch k {
	case FailCrash:
		return "crash"
	case FailLiveness:
		return "liveness"
	case FailCorrectness:
		return "correctness"
	}
	return "unknown"
}

// ExitCode is what herd sim exits with for a failure of this kind.
func (k FailureKind) ExitCode() int {
	switch k {
	case FailCrash:
		return 127
	case FailLiveness:
		return 128
	case FailCorrectness:
		return 129
	}
	return 1
}

// Failure is why a run stopped early.
type Failure struct {
	Kind    FailureKind
	Check   string // the failing check's name
	Message string
	At      sched.Time
}

func (f *Failure) Error() string {
	return fmt.Sprintf("%s failure in check %q at %v: %s", f.Kind, f.Check, f.At, f.Message)
}

// NodeSpec describes one simulated machine.
type NodeSpec struct {
	Name    string       // host name, also used in addresses ("n1:2181")
	Listen  []string     // addresses the node listens on while up
	Factory node.Factory // builds the core for each incarnation
	// Client marks workload generators: the fault schedule leaves them alone
	// unless the scenario's profile says otherwise.
	Client bool
	// OnPowerLoss, if set, is called when the machine loses power (a crash,
	// not a kill or a halt), after its disk became its crash image: checks
	// that hold only between power losses (what sits in the page cache
	// outlives a killed process) reset there.
	OnPowerLoss func()
	// OnDown, if set, is called whenever the process stops (crash, kill or
	// halt), after its core was dropped: a client's checks learn that its
	// operations in flight will never return.
	OnDown func()
}

// World is one simulation run.
type World struct {
	Seed  uint64
	Q     *sched.Queue
	Net   *netsim.Network
	Nodes []*Node // servers and clients, in the order added
	// Bug is the planted bug switched on for this run ("" for none).
	Bug string
	// tuneRaft is Options.Raft.
	tuneRaft func(c *raft.Config)

	params  Params
	faults  *nemesis // nil outside Run
	checks  Checks   // the scenario's, during Run
	trace   *xxhash.Digest
	scratch []byte
	events  uint64
	log     io.Writer
	failure *Failure
	halted  bool // stop the run loop
}

// stream returns an independent PRNG for a named component. Each component
// draws from its own stream, so adding a draw in one does not shift another
// and a divergence points at the component that caused it.
func stream(seed uint64, name string, idx uint64) *node.Rand {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], seed)
	binary.LittleEndian.PutUint64(b[8:], idx)
	h1 := xxhash.Sum64(append(b[:], name...))
	h2 := xxhash.Sum64String(name + "/2")
	return node.NewRand(rand.NewPCG(h1, h2^seed))
}

// NewWorld builds an empty world for seed with the given parameters.
func NewWorld(seed uint64, p Params) *World {
	w := &World{Seed: seed, params: p, trace: xxhash.New(), scratch: make([]byte, 0, 256)}
	w.Q = sched.New(stream(seed, "sched", 0))
	w.Net = netsim.New(w.Q, stream(seed, "net", 0), p.Net)
	return w
}

// SetLog makes the world print every delivered event and fault to out.
func (w *World) SetLog(out io.Writer) { w.log = out }

// Params returns the run's parameters.
func (w *World) Params() Params { return w.params }

// Now is the simulator's true time.
func (w *World) Now() sched.Time { return w.Q.Now() }

// Events is the number of events delivered to cores so far.
func (w *World) Events() uint64 { return w.events }

// TraceHash is the xxhash of every event delivered so far (and of every fault
// injected), in order.
func (w *World) TraceHash() uint64 { return w.trace.Sum64() }

// Failure returns the failure that stopped the run, if any.
func (w *World) Failure() *Failure { return w.failure }

// Fail records a failure and stops the run. The first failure wins.
func (w *World) Fail(kind FailureKind, check, format string, args ...any) {
	if w.failure != nil {
		return
	}
	w.failure = &Failure{Kind: kind, Check: check, Message: fmt.Sprintf(format, args...), At: w.Q.Now()}
	w.halted = true
}

// Node returns the node with the given name.
func (w *World) Node(name string) *Node {
	for _, n := range w.Nodes {
		if n.Name == name {
			return n
		}
	}
	panic("sim: no node " + name)
}

// Servers returns the non-client nodes.
func (w *World) Servers() []*Node {
	var out []*Node
	for _, n := range w.Nodes {
		if !n.Client {
			out = append(out, n)
		}
	}
	return out
}

// AddNode adds and boots a machine.
func (w *World) AddNode(spec NodeSpec) *Node {
	idx := len(w.Nodes)
	n := &Node{
		w:        w,
		NodeSpec: spec,
		Index:    idx,
		FS:       disk.NewSimFS(),
		rng:      stream(w.Seed, "node", uint64(idx)),
		diskRng:  stream(w.Seed, "disk", uint64(idx)),
		timers:   make(map[node.TimerName]*simTimer),
	}
	n.clock = clock{wallEpochMs: w.params.WallEpochMs}
	if d := w.params.MaxDriftPPM; d > 0 {
		n.clock.ppm = int64(n.diskRng.Uint64N(uint64(2*d+1))) - d
	}
	n.diskLane.done = diskHandler{n: n}
	n.bgLane.done = diskHandler{n: n, bg: true}
	w.Nodes = append(w.Nodes, n)
	w.Net.AddHost(spec.Name, n)
	n.boot()
	return n
}

// record folds a delivered event into the trace hash (and the log).
func (w *World) record(n *Node, ev *node.Event) {
	w.events++
	b := w.scratch[:0]
	b = binary.LittleEndian.AppendUint64(b, uint64(w.Q.Now()))
	b = binary.LittleEndian.AppendUint16(b, uint16(n.Index))
	b = append(b, byte(ev.Kind), byte(ev.OpKind))
	b = binary.LittleEndian.AppendUint64(b, uint64(ev.Conn))
	b = binary.LittleEndian.AppendUint64(b, uint64(ev.Op))
	b = binary.LittleEndian.AppendUint64(b, uint64(ev.Size))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ev.Data)))
	b = append(b, ev.Timer...)
	b = append(b, 0)
	b = append(b, ev.Local...)
	b = append(b, 0)
	b = append(b, ev.Remote...)
	b = append(b, 0)
	if ev.Err != nil {
		b = append(b, ev.Err.Error()...)
	}
	b = append(b, 0)
	for _, e := range ev.Entries {
		b = append(b, e.Name...)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Size))
	}
	w.trace.Write(b)
	w.trace.Write(ev.Data)
	w.scratch = b
	if w.log != nil {
		fmt.Fprintf(w.log, "%14v %-4s %-9v", time.Duration(w.Q.Now()), n.Name, ev.Kind)
		switch ev.Kind {
		case node.EvAccepted:
			fmt.Fprintf(w.log, " conn=%d from=%s on=%s", ev.Conn, ev.Remote, ev.Local)
		case node.EvConnected:
			fmt.Fprintf(w.log, " conn=%d", ev.Conn)
		case node.EvReceived:
			fmt.Fprintf(w.log, " conn=%d bytes=%d", ev.Conn, len(ev.Data))
		case node.EvClosed:
			fmt.Fprintf(w.log, " conn=%d err=%v", ev.Conn, ev.Err)
		case node.EvTimer:
			fmt.Fprintf(w.log, " %s", ev.Timer)
		case node.EvDiskDone:
			fmt.Fprintf(w.log, " op=%d %v bytes=%d size=%d err=%v", ev.Op, ev.OpKind, len(ev.Data), ev.Size, ev.Err)
		}
		fmt.Fprintln(w.log)
	}
}

// note folds a harness action (a fault, a phase change) into the trace and
// the log.
func (w *World) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	b := binary.LittleEndian.AppendUint64(w.scratch[:0], uint64(w.Q.Now()))
	b = append(b, s...)
	w.trace.Write(b)
	w.scratch = b
	if w.log != nil {
		fmt.Fprintf(w.log, "%14v ---- %s\n", time.Duration(w.Q.Now()), s)
	}
}
