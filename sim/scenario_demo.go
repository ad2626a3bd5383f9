package sim

import (
	"errors"
	"fmt"
	"time"

	"herd/checker"
	"herd/node"
	"herd/node/demo"
)

// The demo scenarios run the demo protocol (node/demo): test scaffolding that
// exercises the whole harness before the keeper and broker exist.

var demoProfile = FaultProfile{Crash: true, Kill: true, Pause: true, Clock: true, Partition: true,
	Clog: true, ConnReset: true, DiskErrors: true}

var demoBugs = map[string]string{
	demo.BugAckBeforeSync: "appends acknowledged before their fsync: a crash loses acknowledged records",
	demo.BugSkipDirSync:   "the new log file's directory is never fsynced: a crash loses the whole file",
	demo.BugNoCRC:         "recovery accepts records without checking their CRC: torn writes read back as records",
}

type demoShape struct {
	servers, clients int
	appends, window  int
	interval         time.Duration
	payload          int
}

func init() {
	Register(&Scenario{
		Name:    "demo",
		Doc:     "3 demo servers, 3 clients appending under every fault a single-copy log survives; acknowledged records must survive, streams must stay FIFO",
		Profile: demoProfile,
		Bugs:    demoBugs,
		Build: func(w *World) Checks {
			return buildDemo(w, demoShape{servers: 3, clients: 3, appends: 600, window: 4, interval: 25 * time.Millisecond, payload: 64})
		},
	})
	Register(&Scenario{
		Name:    "demo-busy",
		Doc:     "5 demo servers, 8 clients with deep pipelines appending every 5ms, every fault: a busy run for determinism checks",
		Profile: demoProfile,
		Bugs:    demoBugs,
		Build: func(w *World) Checks {
			return buildDemo(w, demoShape{servers: 5, clients: 8, appends: 3000, window: 16, interval: 5 * time.Millisecond, payload: 200})
		},
	})
	Register(&Scenario{
		Name: "demo-idle",
		Doc:  "5 demo servers heartbeating every 50ms, one client appending every 200ms, no faults: the simulator's speed benchmark",
		Tune: func(p *Params) { p.Safety = 60 * time.Second },
		Build: func(w *World) Checks {
			return buildDemo(w, demoShape{servers: 5, clients: 1, appends: 250, window: 1, interval: 200 * time.Millisecond, payload: 64})
		},
	})
}

type demoChecks struct {
	w       *World
	servers []*Node
	clients []*Node
	addrs   []string
	ledger  *checker.LogLedger
}

func buildDemo(w *World, sh demoShape) *demoChecks {
	dc := &demoChecks{w: w, ledger: checker.NewLogLedger()}
	for i := range sh.servers {
		dc.addrs = append(dc.addrs, fmt.Sprintf("n%d:7000", i+1))
	}
	violation := func(msg string) { w.Fail(FailCorrectness, "fifo", "%s", msg) }
	for i, addr := range dc.addrs {
		name := fmt.Sprintf("n%d", i+1)
		cfg := demo.Config{
			Listen:      addr,
			Peers:       dc.addrs,
			Bug:         w.Bug,
			OnViolation: violation,
			OnRecovered: func(recs []demo.Record) {
				if err := dc.ledger.Check(addr, entries(recs)); err != nil {
					w.Fail(FailCorrectness, "durability", "%s after recovery: %v", name, err)
				}
			},
		}
		dc.servers = append(dc.servers, w.AddNode(NodeSpec{Name: name, Listen: []string{addr}, Factory: demo.NewServer(cfg)}))
	}
	for i := range sh.clients {
		name := fmt.Sprintf("c%d", i+1)
		cfg := demo.ClientConfig{
			Name:        name,
			Servers:     dc.addrs,
			Appends:     sh.appends,
			Window:      sh.window,
			Interval:    sh.interval,
			PayloadSize: sh.payload,
			OnSent:      func(server string, p []byte) { dc.ledger.Sent(server, p) },
			OnAck: func(server string, off int64, p []byte) {
				if err := dc.ledger.Acked(server, off, p); err != nil {
					w.Fail(FailCorrectness, "durability", "%s: %v", name, err)
				}
			},
			OnViolation: func(msg string) { w.Fail(FailCorrectness, "fifo", "%s", msg) },
		}
		dc.clients = append(dc.clients, w.AddNode(NodeSpec{Name: name, Factory: demo.NewClient(cfg), Client: true}))
	}
	return dc
}

func entries(recs []demo.Record) []checker.Entry {
	out := make([]checker.Entry, len(recs))
	for i, r := range recs {
		out[i] = checker.Entry{Off: r.Off, Payload: r.Payload}
	}
	return out
}

// Converged: every client got all its appends acknowledged and every server
// is up, recovered and connected to all its peers.
func (dc *demoChecks) Converged() (bool, string) {
	for _, c := range dc.clients {
		cl, _ := c.Machine().(*demo.Client)
		if cl == nil {
			return false, c.Name + " is down"
		}
		if !cl.Done() {
			return false, fmt.Sprintf("%s has %d appends acknowledged", c.Name, cl.Acked())
		}
	}
	for _, n := range dc.servers {
		s, _ := n.Machine().(*demo.Server)
		switch {
		case s == nil:
			return false, fmt.Sprintf("%s is down (last halt: %q)", n.Name, n.LastHalt())
		case !s.Ready():
			return false, n.Name + " is recovering"
		case s.PeersConnected() != len(dc.servers)-1:
			return false, fmt.Sprintf("%s has %d of %d peers connected", n.Name, s.PeersConnected(), len(dc.servers)-1)
		}
	}
	return true, ""
}

// Final: what is on each disk, not what the servers believe, must hold every
// acknowledged record, and the two must agree.
func (dc *demoChecks) Final() error {
	total := 0
	for i, n := range dc.servers {
		addr := dc.addrs[i]
		data, err := n.FS.ReadAt("log", 0, node.MaxReadLen)
		if err != nil && !errors.Is(err, node.ErrNotExist) {
			return fmt.Errorf("%s: reading log: %v", n.Name, err)
		}
		recs, valid := demo.ParseLog(data, true)
		if valid != int64(len(data)) {
			return fmt.Errorf("%s: log has %d bytes but only %d parse after a clean run", n.Name, len(data), valid)
		}
		if err := dc.ledger.Check(addr, entries(recs)); err != nil {
			return fmt.Errorf("%s on disk: %v", n.Name, err)
		}
		mem := n.Machine().(*demo.Server).Records()
		if len(mem) != len(recs) {
			return fmt.Errorf("%s believes its log has %d records, the disk has %d", n.Name, len(mem), len(recs))
		}
		total += dc.ledger.AckedCount(addr)
	}
	// The checks above are only as good as the history they saw: every
	// client's acknowledgements must have reached the ledger.
	want := 0
	for _, c := range dc.clients {
		want += c.Machine().(*demo.Client).Acked()
	}
	if total < want {
		return fmt.Errorf("ledger holds %d acknowledged positions, clients saw %d acknowledgements", total, want)
	}
	return nil
}
