package sim

import (
	"math"
	"time"

	"herd/netsim"
	"herd/node"
)

// Latency is a delay distribution: Min plus an exponential part with mean
// Mean, clamped at Min+20*Mean so one draw cannot stall a run.
type Latency struct {
	Min, Mean time.Duration
}

func (l Latency) draw(r *node.Rand) time.Duration {
	d := l.Min
	if l.Mean > 0 {
		x := -math.Log(1-r.Float64()) * float64(l.Mean)
		d += time.Duration(math.Min(x, 20*float64(l.Mean)))
	}
	return d
}

// DiskParams models a device that serves one operation at a time in each
// lane (the queue, and the background lane beside it), with no contention
// between the two.
type DiskParams struct {
	Read, Write, Sync, Meta Latency
	// BytesPerSecond adds size/BytesPerSecond to reads and writes.
	BytesPerSecond int64
}

func (d DiskParams) latency(op node.DiskOp, r *node.Rand) time.Duration {
	var l time.Duration
	var size int
	switch op.Kind {
	case node.OpRead:
		l, size = d.Read.draw(r), op.Len
	case node.OpWrite:
		l, size = d.Write.draw(r), len(op.Data)
	case node.OpSync, node.OpSyncDir:
		l = d.Sync.draw(r)
	default:
		l = d.Meta.draw(r)
	}
	if d.BytesPerSecond > 0 && size > 0 {
		l += time.Duration(int64(size) * int64(time.Second) / d.BytesPerSecond)
	}
	return l
}

// FaultProfile is what a scenario lets the fault schedule do. Safety must hold
// under every fault a scenario enables; scenarios leave out only what their
// design does not claim to survive (a single-copy log cannot survive bit rot).
type FaultProfile struct {
	Crash      bool // power loss: unsynced data lost or torn
	Kill       bool // process killed: page cache survives
	Pause      bool // process stopped, then resumed
	Clock      bool // clock jumps and drift changes
	Partition  bool // symmetric, one-way, isolate, halves, bridge
	Clog       bool // a link slowed for a while
	ConnReset  bool // a connection reset
	DiskErrors bool // EIO on read, write and sync for a while
	Corruption bool // bit flips in durable data
	Misdirect  bool // a write lands at the wrong offset
	Wipe       bool // a server's disk is replaced by a blank one
	// Clients lets crash, kill and pause hit client nodes too
	// (FaultRates.ClientShare).
	Clients bool
}

// AllFaults enables everything.
var AllFaults = FaultProfile{Crash: true, Kill: true, Pause: true, Clock: true, Partition: true,
	Clog: true, ConnReset: true, DiskErrors: true, Corruption: true, Misdirect: true, Wipe: true}

// FaultRates gives the mean time between injections of each fault in the
// safety phase; zero turns a fault off.
type FaultRates struct {
	Crash, Kill, Pause, Clock, Partition, Clog, ConnReset, DiskErrors, Corruption, Misdirect, Wipe time.Duration
	// Downtime is how long a crashed or killed node stays down; Outage how
	// long a partition, pause, clog or disk-error window lasts.
	Downtime, Outage Latency
	// DiskErrorRate is the per-operation failure probability inside a
	// disk-error window.
	DiskErrorRate float64
	// ClientShare is the share of crashes, kills and pauses that hit a
	// client rather than a server (0 unless FaultProfile.Clients).
	ClientShare float64
}

// Params is everything about a run's environment that a seed may vary.
type Params struct {
	Net         netsim.Config
	Disk        DiskParams
	MaxDriftPPM int64
	WallEpochMs int64
	Faults      FaultRates
	// Safety is how long faults are injected; Liveness how long the healed
	// system gets to converge afterwards.
	Safety, Liveness time.Duration
	// RestartDelay is how long a supervisor waits before restarting a node
	// that halted itself.
	RestartDelay time.Duration
	// MaxEvents bounds a run, so a livelock spinning at one instant ends as a
	// liveness failure instead of hanging.
	MaxEvents uint64
}

// DefaultParams is a moderate, fixed environment: every enabled fault at a
// middling rate.
func DefaultParams(p FaultProfile) Params {
	prm := Params{
		Net: netsim.DefaultConfig(),
		Disk: DiskParams{
			Read:           Latency{Min: 20 * time.Microsecond, Mean: 30 * time.Microsecond},
			Write:          Latency{Min: 5 * time.Microsecond, Mean: 10 * time.Microsecond},
			Sync:           Latency{Min: 500 * time.Microsecond, Mean: time.Millisecond},
			Meta:           Latency{Min: 10 * time.Microsecond, Mean: 20 * time.Microsecond},
			BytesPerSecond: 1 << 30,
		},
		MaxDriftPPM:  100,
		WallEpochMs:  1_767_225_600_000, // 2026-01-01T00:00:00Z
		Safety:       20 * time.Second,
		Liveness:     30 * time.Second,
		RestartDelay: 500 * time.Millisecond,
		MaxEvents:    50_000_000,
	}
	r := FaultRates{
		Downtime:      Latency{Min: 50 * time.Millisecond, Mean: time.Second},
		Outage:        Latency{Min: 50 * time.Millisecond, Mean: time.Second},
		DiskErrorRate: 0.05,
	}
	set := func(on bool, d *time.Duration, v time.Duration) {
		if on {
			*d = v
		}
	}
	set(p.Crash, &r.Crash, 4*time.Second)
	set(p.Kill, &r.Kill, 8*time.Second)
	set(p.Pause, &r.Pause, 5*time.Second)
	set(p.Clock, &r.Clock, 5*time.Second)
	set(p.Partition, &r.Partition, 3*time.Second)
	set(p.Clog, &r.Clog, 3*time.Second)
	set(p.ConnReset, &r.ConnReset, 2*time.Second)
	set(p.DiskErrors, &r.DiskErrors, 8*time.Second)
	set(p.Corruption, &r.Corruption, 10*time.Second)
	set(p.Misdirect, &r.Misdirect, 20*time.Second)
	set(p.Wipe, &r.Wipe, 20*time.Second)
	if p.Clients {
		r.ClientShare = 0.2
	}
	prm.Faults = r
	return prm
}

// SwarmParams draws the environment itself from the seed, as TigerBeetle's
// VOPR does: each fault the profile allows is on or off and has its own rate,
// and latencies, jitter, fragmentation, drift and disk speed vary, so a sweep
// of seeds covers calm runs, single-fault runs and storms.
func SwarmParams(seed uint64, p FaultProfile) Params {
	r := stream(seed, "swarm", 0)
	prm := DefaultParams(FaultProfile{})
	// logUniform returns a duration between lo and hi, uniform in log space.
	logUniform := func(lo, hi time.Duration) time.Duration {
		return time.Duration(float64(lo) * math.Pow(float64(hi)/float64(lo), r.Float64()))
	}
	prm.Net.Link.Latency = logUniform(20*time.Microsecond, 5*time.Millisecond)
	prm.Net.Link.Jitter = logUniform(time.Microsecond, 5*time.Millisecond)
	if r.Chance(0.3) {
		prm.Net.Link.Bandwidth = int64(logUniform(10<<20, 2<<30)) // bytes/s
	}
	prm.Net.SplitChance = r.Float64() * 0.3
	prm.Net.CoalesceChance = r.Float64() * 0.3
	prm.Net.RetransmitTimeout = logUniform(time.Second, 20*time.Second)
	prm.Disk.Sync = Latency{Min: logUniform(50*time.Microsecond, 5*time.Millisecond), Mean: logUniform(50*time.Microsecond, 10*time.Millisecond)}
	prm.Disk.Write.Mean = logUniform(time.Microsecond, time.Millisecond)
	prm.Disk.BytesPerSecond = int64(logUniform(100<<20, 4<<30))
	prm.MaxDriftPPM = []int64{0, 100, 1000, 20000}[r.IntN(4)]
	f := &prm.Faults
	f.Downtime = Latency{Min: logUniform(time.Millisecond, 500*time.Millisecond), Mean: logUniform(10*time.Millisecond, 5*time.Second)}
	f.Outage = Latency{Min: logUniform(time.Millisecond, 500*time.Millisecond), Mean: logUniform(10*time.Millisecond, 5*time.Second)}
	f.DiskErrorRate = logUniformF(r, 0.001, 0.5)
	maybe := func(on bool, d *time.Duration) {
		// Each allowed fault is off in a quarter of the runs, so every
		// fault is also tested in isolation from its neighbours.
		if on && r.Chance(0.75) {
			*d = logUniform(200*time.Millisecond, 20*time.Second)
		}
	}
	maybe(p.Crash, &f.Crash)
	maybe(p.Kill, &f.Kill)
	maybe(p.Pause, &f.Pause)
	maybe(p.Clock, &f.Clock)
	maybe(p.Partition, &f.Partition)
	maybe(p.Clog, &f.Clog)
	maybe(p.ConnReset, &f.ConnReset)
	maybe(p.DiskErrors, &f.DiskErrors)
	maybe(p.Corruption, &f.Corruption)
	maybe(p.Misdirect, &f.Misdirect)
	maybe(p.Wipe, &f.Wipe)
	if p.Clients && r.Chance(0.5) {
		// Clients go down in half the runs (drawn last, so that profiles
		// without it draw as before): what they leave behind, requests of
		// unknown outcome, also makes histories less telling.
		f.ClientShare = logUniformF(r, 0.05, 0.5)
	}
	return prm
}

func logUniformF(r *node.Rand, lo, hi float64) float64 {
	return lo * math.Pow(hi/lo, r.Float64())
}
