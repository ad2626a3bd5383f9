package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"herd/disk"
	"herd/node"
	"herd/node/frame"
	"herd/node/raft"
	"herd/node/replog"
	"herd/node/shell"
)

func runBench(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: herd bench raft|keeper|broker [flags]   (herd bench keeper --help, herd bench broker produce --help)")
		return 2
	}
	switch args[0] {
	case "raft":
		return benchRaft(args[1:], stdout, stderr)
	case "keeper":
		return benchKeeper(args[1:], stdout, stderr)
	case "broker":
		return benchBroker(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "herd bench: unknown target %q (want raft, keeper or broker)\n", args[0])
	return 2
}

// benchRaft measures commit throughput and latency of a 3-server raft group
// on the production shell: loopback TCP, real files, fdatasync. Each
// proposer keeps one proposal outstanding on its own connection to the
// leader (a closed loop), so latency is commit latency as a client sees it
// and throughput grows only as far as group commit and pipelining let it.
func benchRaft(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd bench raft", flag.ContinueOnError)
	fs.SetOutput(stderr)
	proposers := fs.String("proposers", "1,16,64", "comma-separated concurrent proposer counts to measure")
	duration := fs.Duration("duration", 10*time.Second, "measuring time per proposer count")
	warmup := fs.Duration("warmup", time.Second, "unmeasured time before each measurement")
	size := fs.Int("size", 100, "payload bytes per proposal")
	dataDir := fs.String("data", "", "where the servers' files go (default: a temporary directory, removed afterwards)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var counts []int
	for _, f := range strings.Split(*proposers, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "herd bench raft: bad --proposers entry %q\n", f)
			return 2
		}
		counts = append(counts, n)
	}
	dir := *dataDir
	if dir == "" {
		d, err := os.MkdirTemp("", "herd-bench-raft-")
		if err != nil {
			fmt.Fprintln(stderr, "herd bench raft:", err)
			return 1
		}
		defer os.RemoveAll(d)
		dir = d
	}
	g, err := startGroup(dir)
	if err != nil {
		fmt.Fprintln(stderr, "herd bench raft:", err)
		return 1
	}
	defer g.stop()
	leader, err := g.waitLeader(10 * time.Second)
	if err != nil {
		fmt.Fprintln(stderr, "herd bench raft:", err)
		return 1
	}
	fmt.Fprintf(stdout, "herd bench raft: 3 servers on loopback, files in %s (fdatasync), payload %d B, %v per point\n", dir, *size, *duration)
	fmt.Fprintf(stdout, "%-10s %12s %10s %10s %10s   %s\n", "proposers", "commits/s", "p50", "p99", "p999", "entries per fsync (each server)")
	for _, n := range counts {
		if _, err := runProposers(leader, n, *warmup, *size); err != nil {
			fmt.Fprintln(stderr, "herd bench raft: warmup:", err)
			return 1
		}
		start := g.batchStats()
		lat, err := runProposers(leader, n, *duration, *size)
		if err != nil {
			fmt.Fprintln(stderr, "herd bench raft:", err)
			return 1
		}
		slices.Sort(lat)
		end := g.batchStats()
		q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
		var perFsync []string
		for i := range end {
			b, e := end[i][0]-start[i][0], end[i][1]-start[i][1]
			perFsync = append(perFsync, fmt.Sprintf("%.1f", float64(e)/max(float64(b), 1)))
		}
		fmt.Fprintf(stdout, "%-10d %12.0f %10v %10v %10v   %s\n", n, float64(len(lat))/duration.Seconds(),
			q(0.50).Round(time.Microsecond), q(0.99).Round(time.Microsecond), q(0.999).Round(time.Microsecond),
			strings.Join(perFsync, "/"))
	}
	return 0
}

type group struct {
	shells  []*shell.Shell
	fss     []*disk.OS
	clients []string
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	errs    []error
}

func startGroup(dir string) (*group, error) {
	g := &group{}
	peers := make([]raft.Peer, 3)
	for i := range 3 {
		f, err := disk.NewOS(filepath.Join(dir, fmt.Sprintf("s%d", i+1)))
		if err != nil {
			g.stop()
			return nil, err
		}
		g.fss = append(g.fss, f)
		id := raft.ID(i + 1)
		sh, err := shell.New(shell.Config{Name: fmt.Sprintf("s%d", i+1), FS: f, Listen: []string{"127.0.0.1:0", "127.0.0.1:0"}},
			func(env node.Env) node.Machine {
				// peers is complete by the time Run calls the factory.
				return replog.NewServer(replog.ServerConfig{Raft: raft.Config{ID: id, Peers: peers}})(env)
			})
		if err != nil {
			g.stop()
			return nil, err
		}
		g.shells = append(g.shells, sh)
		peers[i] = raft.Peer{ID: id, Addr: sh.Addrs()[0]}
		g.clients = append(g.clients, sh.Addrs()[1])
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	g.errs = make([]error, 3)
	for i, sh := range g.shells {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			g.errs[i] = sh.Run(ctx)
		}()
	}
	return g, nil
}

func (g *group) stop() {
	if g.cancel != nil {
		g.cancel()
		g.wg.Wait()
	} else {
		for _, sh := range g.shells {
			sh.Close()
		}
	}
	for _, f := range g.fss {
		f.Close()
	}
}

// batchStats returns each server's WAL batches and entries so far.
func (g *group) batchStats() [][2]uint64 {
	out := make([][2]uint64, len(g.shells))
	for i, sh := range g.shells {
		_ = sh.Do(func(m node.Machine) {
			st := m.(*replog.Server).Raft().Status()
			out[i] = [2]uint64{st.Batches, st.BatchedEntries}
		})
	}
	return out
}

// waitLeader returns the client address of the server that leads.
func (g *group) waitLeader(limit time.Duration) (string, error) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		for i, sh := range g.shells {
			leads := false
			_ = sh.Do(func(m node.Machine) {
				st := m.(*replog.Server).Raft().Status()
				leads = st.Role == raft.Leader && st.Commit > 0
			})
			if leads {
				return g.clients[i], nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", errors.New("no leader elected")
}

// runProposers runs n closed-loop proposers against addr for d and returns
// every commit latency.
func runProposers(addr string, n int, d time.Duration, size int) ([]time.Duration, error) {
	stop := time.Now().Add(d)
	lats := make([][]time.Duration, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for p := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats[p], errs[p] = propose(addr, stop, size)
		}()
	}
	wg.Wait()
	var all []time.Duration
	for p := range n {
		if errs[p] != nil {
			return nil, errs[p]
		}
		all = append(all, lats[p]...)
	}
	if len(all) == 0 {
		return nil, errors.New("no proposal committed")
	}
	return all, nil
}

func propose(addr string, stop time.Time, size int) ([]time.Duration, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	payload := make([]byte, size)
	in := frame.NewReader(replog.MaxFrame)
	buf := make([]byte, 64<<10)
	var lats []time.Duration
	var req []byte
	for id := uint64(1); time.Now().Before(stop); id++ {
		req = replog.AppendPropose(req[:0], id, payload)
		start := time.Now()
		if _, err := c.Write(req); err != nil {
			return nil, err
		}
		for {
			body, ok, err := in.Next()
			if err != nil {
				return nil, err
			}
			if ok {
				r, err := replog.ParseResponse(body)
				if err != nil {
					return nil, err
				}
				if !r.OK {
					return nil, fmt.Errorf("proposal failed: %s", r.Reason)
				}
				break
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			k, err := c.Read(buf)
			if err != nil {
				return nil, err
			}
			in.Feed(buf[:k])
		}
		lats = append(lats, time.Since(start))
	}
	return lats, nil
}
