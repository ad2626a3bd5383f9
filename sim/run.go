package sim

import (
	"fmt"
	"io"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"herd/netsim"
	"herd/node/raft"
	"herd/sim/sched"
)

// Checks is what a scenario's Build returns: how the harness asks whether the
// system did its job. Safety checks do not wait for the end: scenario code
// calls World.Fail the moment it sees a violation.
type Checks interface {
	// Converged reports whether the system has reached the state the
	// liveness phase waits for; when it has not, why (e.g. "client c2 has 3
	// appends unacknowledged").
	Converged() (bool, string)
	// Final runs the end-of-run checks on a converged system.
	Final() error
}

// Counters is implemented by checks that count things tests look at (how
// often a mechanism was used); Result.Counters holds them at the end.
type Counters interface {
	Counters() map[string]uint64
}

// Scenario is a named simulation: a cluster, a workload and its checks.
type Scenario struct {
	Name string
	Doc  string
	// Profile says which faults the scenario survives (and so enables).
	Profile FaultProfile
	// Bugs names the planted bugs the scenario can switch on (Options.Bug),
	// each with what it breaks; tests prove the checks catch every one.
	Bugs map[string]string
	// Tune adjusts the drawn parameters (e.g. a shorter safety phase).
	Tune func(p *Params)
	// Build adds the nodes and clients to w and returns the checks.
	Build func(w *World) Checks
}

var scenarios []*Scenario

// Register adds a scenario to the list herd sim knows.
func Register(s *Scenario) {
	if Lookup(s.Name) != nil {
		panic("sim: scenario registered twice: " + s.Name)
	}
	scenarios = append(scenarios, s)
	slices.SortFunc(scenarios, func(a, b *Scenario) int { return strings.Compare(a.Name, b.Name) })
}

// Lookup returns the named scenario or nil.
func Lookup(name string) *Scenario {
	for _, s := range scenarios {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Scenarios lists the registered scenarios by name.
func Scenarios() []*Scenario { return scenarios }

// DefaultScenario is what herd sim runs when none is named.
const DefaultScenario = "demo"

// Options selects one run.
type Options struct {
	Seed     uint64
	Scenario string
	// Swarm draws fault kinds, rates and the environment from the seed;
	// without it every fault the scenario allows runs at a fixed rate.
	Swarm bool
	// Bug switches on one of the scenario's planted bugs (tests only).
	Bug string
	// Log, if set, receives every delivered event and fault.
	Log io.Writer
	// Tune, if set, adjusts parameters after the scenario's own Tune.
	Tune func(p *Params)
	// Raft, if set, adjusts each server's raft configuration after the
	// consensus scenario's own draws (tests only).
	Raft func(c *raft.Config)
}

// Result is the outcome of one run.
type Result struct {
	Seed     uint64
	Scenario string
	Trace    uint64
	Events   uint64
	SimTime  time.Duration
	Wall     time.Duration
	Failure  *Failure
	Faults   string // the fault kinds and mean intervals in force
	Replay   string // the command that replays this run
	Net      netsim.Stats
	Counters map[string]uint64 // from the scenario's checks, if they count (Counters)
}

// OK reports whether the run passed.
func (r Result) OK() bool { return r.Failure == nil }

// ReplayCommand is the herd invocation that reruns o exactly.
func ReplayCommand(o Options) string {
	cmd := fmt.Sprintf("herd sim --seed %d --scenario %s", o.Seed, o.Scenario)
	if !o.Swarm {
		cmd += " --swarm=false"
	}
	if o.Bug != "" {
		cmd += " --bug " + o.Bug
	}
	return cmd
}

// Run executes one simulation.
func Run(o Options) (res Result) {
	if o.Scenario == "" {
		o.Scenario = DefaultScenario
	}
	res = Result{Seed: o.Seed, Scenario: o.Scenario, Replay: ReplayCommand(o)}
	sc := Lookup(o.Scenario)
	if sc == nil {
		res.Failure = &Failure{Kind: FailCrash, Check: "setup", Message: "unknown scenario " + o.Scenario}
		return res
	}
	if o.Bug != "" {
		if _, ok := sc.Bugs[o.Bug]; !ok {
			res.Failure = &Failure{Kind: FailCrash, Check: "setup", Message: fmt.Sprintf("scenario %s has no planted bug %q", sc.Name, o.Bug)}
			return res
		}
	}
	p := DefaultParams(sc.Profile)
	if o.Swarm {
		p = SwarmParams(o.Seed, sc.Profile)
	}
	if sc.Tune != nil {
		sc.Tune(&p)
	}
	if o.Tune != nil {
		o.Tune(&p)
	}
	w := NewWorld(o.Seed, p)
	w.Bug = o.Bug
	w.tuneRaft = o.Raft
	if o.Log != nil {
		w.SetLog(o.Log)
	}
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			w.failure = &Failure{Kind: FailCrash, Check: "panic", At: w.Q.Now(),
				Message: fmt.Sprintf("%v\n%s", r, trimStack(debug.Stack()))}
		}
		res.Trace = w.TraceHash()
		res.Net = w.Net.Stats()
		res.Events = w.Events()
		res.SimTime = time.Duration(w.Q.Now())
		res.Wall = time.Since(start)
		res.Failure = w.failure
		if c, ok := w.checks.(Counters); ok {
			res.Counters = c.Counters()
		}
	}()
	checks := sc.Build(w)
	w.checks = checks
	nm := newNemesis(w)
	w.faults = nm
	res.Faults = strings.TrimSpace(nm.String())
	w.runUntil(sched.Time(p.Safety))
	if w.failure != nil {
		return res
	}
	nm.heal()
	deadline := w.Q.Now().Add(p.Liveness)
	for {
		if ok, _ := checks.Converged(); ok {
			break
		}
		if w.Q.Now() >= deadline {
			_, why := checks.Converged()
			w.Fail(FailLiveness, "converge", "not converged %v after the faults healed: %s", p.Liveness, why)
			return res
		}
		w.runUntil(min(w.Q.Now().Add(10*time.Millisecond), deadline))
		if w.failure != nil {
			return res
		}
	}
	w.note("converged")
	if err := checks.Final(); err != nil {
		w.Fail(FailCorrectness, "final", "%v", err)
	}
	return res
}

// runUntil fires events up to time t, stopping early on a failure or when the
// event budget is spent.
func (w *World) runUntil(t sched.Time) {
	max := w.params.MaxEvents
	w.Q.RunUntil(t, func() bool {
		if max > 0 && w.events >= max {
			w.Fail(FailLiveness, "event-budget", "more than %d events: a livelock?", max)
		}
		return w.halted
	})
}

// trimStack drops the runtime's own frames from a panic stack.
func trimStack(s []byte) string {
	lines := strings.Split(string(s), "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "panic(") {
			return strings.Join(lines[i:], "\n")
		}
	}
	return string(s)
}
