// Command sidebyside measures herd's keeper next to Apache ZooKeeper 3.8
// (Debian's package) on this machine: the same 3-server ensemble layout
// (compat/ensemble: separate processes, loopback, fsync on), the same client
// (`herd bench keeper`, go-zookeeper), rounds alternating between the two so
// that machine noise hits both alike. It prints the median of the rounds per
// phase and the ratios the keeper issue's goals are stated in.
//
//	go run ./compat/sidebyside --rounds 3 --duration 10s
//	go run ./compat/sidebyside --memory      # RSS with 1,000,000 znodes, restart time
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"herd/compat/ensemble"
)

type report struct {
	Phase     string  `json:"phase"`
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Us     float64 `json:"p50_us"`
	P99Us     float64 `json:"p99_us"`
	P999Us    float64 `json:"p999_us"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
}

type options struct {
	herdBin     string
	rounds      int
	duration    time.Duration
	warmup      time.Duration
	clients     int
	outstanding []int
	size        int
	jvmFlags    []string
	targets     []ensemble.Kind
	memory      bool
	znodes      int
	keys        int
	keep        bool
	clientProcs int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sidebyside", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.herdBin, "herd", "bin/herd", "herd binary (build it with `make build`)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds per target (alternating); medians are reported")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each phase")
	fs.DurationVar(&o.warmup, "warmup", 20*time.Second, "unmeasured load on each fresh ensemble before the rounds (JIT warm-up for ZooKeeper)")
	fs.IntVar(&o.clients, "clients", 32, "sessions")
	outs := fs.String("outstanding", "1,16", "requests in flight per session; one set of rounds per value")
	fs.IntVar(&o.size, "size", 100, "value size in bytes")
	jvm := fs.String("jvm-flags", "-Xms64m -Xmx1000m -Djava.net.preferIPv4Stack=true", "ZooKeeper's JVM flags (upstream zkEnv.sh's default heap is 1000 MB)")
	targets := fs.String("targets", "zookeeper,herd", "which ensembles to run")
	fs.BoolVar(&o.memory, "memory", false, "instead of throughput: resident memory with --znodes znodes of --size bytes, and time to restart a server and rejoin")
	fs.IntVar(&o.znodes, "znodes", 1_000_000, "znodes for --memory")
	fs.IntVar(&o.keys, "keys", 0, "znodes each round's create phase makes (herd bench keeper --keys), so both targets' set, get and delete phases work on trees of the same size; 0: as many as --duration allows (the faster target then holds a bigger tree)")
	fs.BoolVar(&o.keep, "keep", false, "keep the ensembles' directories")
	fs.IntVar(&o.clientProcs, "client-procs", 0, "GOMAXPROCS of the load generator (herd bench keeper --procs; 0: Go's default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	o.jvmFlags = strings.Fields(*jvm)
	if o.keys < 0 {
		fmt.Fprintf(stderr, "sidebyside: bad --keys %d: want 0 or more\n", o.keys)
		return 2
	}
	for _, s := range strings.Split(*outs, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || k < 1 {
			fmt.Fprintf(stderr, "sidebyside: bad --outstanding %q\n", *outs)
			return 2
		}
		o.outstanding = append(o.outstanding, k)
	}
	for _, t := range strings.Split(*targets, ",") {
		k := ensemble.Kind(strings.TrimSpace(t))
		if k != ensemble.Herd && k != ensemble.ZooKeeper {
			fmt.Fprintf(stderr, "sidebyside: unknown target %q (want zookeeper, herd)\n", t)
			return 2
		}
		o.targets = append(o.targets, k)
	}
	if abs, err := filepath.Abs(o.herdBin); err == nil {
		o.herdBin = abs
	}
	if _, err := os.Stat(o.herdBin); err != nil {
		fmt.Fprintf(stderr, "sidebyside: %v (run `make build` first)\n", err)
		return 2
	}
	var err error
	if o.memory {
		err = memory(o, stdout, stderr)
	} else {
		err = throughput(o, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "sidebyside:", err)
		return 1
	}
	return 0
}

func startEnsemble(o options, kind ensemble.Kind, stderr io.Writer) (*ensemble.Ensemble, error) {
	opts := ensemble.Options{Servers: 3, HerdBin: o.herdBin, JVMFlags: o.jvmFlags, StartTimeout: 90 * time.Second}
	if o.keep {
		dir, err := os.MkdirTemp("", "sidebyside-"+string(kind)+"-")
		if err != nil {
			return nil, err
		}
		opts.Dir = dir
		fmt.Fprintf(stderr, "sidebyside: %s ensemble in %s\n", kind, dir)
	}
	return ensemble.Start(kind, opts)
}

// bench runs `herd bench keeper` against hosts and returns its JSON lines.
func bench(o options, hosts string, extra ...string) ([]report, error) {
	args := append([]string{"bench", "keeper", "--servers", hosts, "--json", "--procs", strconv.Itoa(o.clientProcs)}, extra...)
	cmd := exec.Command(o.herdBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("herd %s: %v\n%s", strings.Join(args, " "), err, errb.String())
	}
	var rs []report
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		var r report
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("bad bench output %q: %v", sc.Text(), err)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

var phases = []string{"create", "set", "get", "delete"}

func throughput(o options, stdout, stderr io.Writer) error {
	ens := map[ensemble.Kind]*ensemble.Ensemble{}
	defer func() {
		for _, e := range ens {
			e.Stop()
		}
	}()
	for _, k := range o.targets {
		e, err := startEnsemble(o, k, stderr)
		if err != nil {
			return fmt.Errorf("starting %s: %v", k, err)
		}
		ens[k] = e
		if o.warmup > 0 {
			fmt.Fprintf(stderr, "sidebyside: warming up %s for %s\n", k, o.warmup)
			if _, err := bench(o, e.Hosts(), "--clients", strconv.Itoa(o.clients), "--outstanding", "4",
				"--duration", (o.warmup / 4).String(), "--size", strconv.Itoa(o.size)); err != nil {
				return err
			}
		}
	}
	// results[outstanding][kind][phase] = one report per round
	type key struct {
		k     int
		kind  ensemble.Kind
		phase string
	}
	results := map[key][]report{}
	var shortCreates []string
	for _, k := range o.outstanding {
		for round := 0; round < o.rounds; round++ {
			for _, kind := range o.targets {
				fmt.Fprintf(stderr, "sidebyside: outstanding %d, round %d/%d, %s\n", k, round+1, o.rounds, kind)
				rs, err := bench(o, ens[kind].Hosts(), "--clients", strconv.Itoa(o.clients), "--outstanding", strconv.Itoa(k),
					"--duration", o.duration.String(), "--size", strconv.Itoa(o.size), "--warmup", "1s", "--keys", strconv.Itoa(o.keys))
				if err != nil {
					return err
				}
				for _, r := range rs {
					results[key{k, kind, r.Phase}] = append(results[key{k, kind, r.Phase}], r)
					if r.Phase == "create" && o.keys > 0 && r.Ops < int64(o.keys) {
						// The trees differ after all: say so next to the figures.
						shortCreates = append(shortCreates, fmt.Sprintf("%s created %d of --keys %d znodes within --duration at %d outstanding, round %d; its later phases ran on that smaller tree",
							kind, r.Ops, o.keys, k, round+1))
					}
				}
			}
		}
	}
	median := func(rs []report, f func(report) float64) float64 {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = f(r)
		}
		slices.Sort(v)
		if len(v) == 0 {
			return 0
		}
		return v[len(v)/2]
	}
	fmt.Fprintf(stdout, "keeper side by side: 3 servers each on loopback, fsync on; %d sessions, %d B values, %s phases, median of %d rounds\n",
		o.clients, o.size, o.duration, o.rounds)
	if o.keys > 0 {
		fmt.Fprintf(stdout, "create phase: %d znodes (--keys), so every phase after it works on the same tree for both\n", o.keys)
	}
	for _, s := range shortCreates {
		fmt.Fprintln(stdout, "note:", s)
	}
	fmt.Fprintf(stdout, "ZooKeeper JVM flags: %s\n", strings.Join(o.jvmFlags, " "))
	// The phase's length and the spread of p99 over the rounds are shown
	// because a short phase (a fast target's create or delete of --keys)
	// weighs its start and any single stall more in its p99.
	fmt.Fprintf(stdout, "%-4s %-7s %-10s %10s %10s %10s %10s %8s  %s\n", "K", "phase", "target", "ops/s", "p50", "p99", "p999", "time", "p99 over rounds")
	for _, k := range o.outstanding {
		for _, ph := range phases {
			vals := map[ensemble.Kind][2]float64{}
			for _, kind := range o.targets {
				rs := results[key{k, kind, ph}]
				if len(rs) == 0 {
					continue
				}
				ops := median(rs, func(r report) float64 { return r.OpsPerSec })
				p99 := median(rs, func(r report) float64 { return r.P99Us })
				vals[kind] = [2]float64{ops, p99}
				lo, hi := rs[0].P99Us, rs[0].P99Us
				for _, r := range rs {
					lo, hi = min(lo, r.P99Us), max(hi, r.P99Us)
				}
				fmt.Fprintf(stdout, "%-4d %-7s %-10s %10.0f %10s %10s %10s %7.1fs  %s–%s\n", k, ph, kind, ops,
					us(median(rs, func(r report) float64 { return r.P50Us })), us(p99),
					us(median(rs, func(r report) float64 { return r.P999Us })),
					median(rs, func(r report) float64 { return r.Seconds }), us(lo), us(hi))
			}
			h, okh := vals[ensemble.Herd]
			z, okz := vals[ensemble.ZooKeeper]
			if okh && okz && z[0] > 0 && z[1] > 0 {
				fmt.Fprintf(stdout, "%-4d %-7s %-10s %9.2fx %10s %9.2fx\n", k, ph, "herd/zk", h[0]/z[0], "", h[1]/z[1])
			}
		}
	}
	return nil
}

func us(v float64) string {
	return (time.Duration(v) * time.Microsecond).Round(10 * time.Microsecond).String()
}

// memory populates each ensemble with o.znodes znodes, reads every server's
// resident set size, then kills one follower, restarts it and times how long
// until it serves the full tree again.
func memory(o options, stdout, stderr io.Writer) error {
	fmt.Fprintf(stdout, "keeper memory: %d znodes x %d B on 3 servers; ZooKeeper JVM flags: %s\n", o.znodes, o.size, strings.Join(o.jvmFlags, " "))
	for _, kind := range o.targets {
		e, err := startEnsemble(o, kind, stderr)
		if err != nil {
			return fmt.Errorf("starting %s: %v", kind, err)
		}
		err = memoryOne(o, e, kind, stdout, stderr)
		e.Stop()
		if err != nil {
			return fmt.Errorf("%s: %v", kind, err)
		}
	}
	return nil
}

func memoryOne(o options, e *ensemble.Ensemble, kind ensemble.Kind, stdout, stderr io.Writer) error {
	rssLine := func(when string) {
		var parts []string
		for _, pid := range e.PIDs() {
			parts = append(parts, fmt.Sprintf("%d MiB", rss(pid)>>20))
		}
		fmt.Fprintf(stdout, "%-10s RSS %-22s %s\n", kind, when, strings.Join(parts, " / "))
	}
	rssLine("empty:")
	fmt.Fprintf(stderr, "sidebyside: populating %s with %d znodes\n", kind, o.znodes)
	t0 := time.Now()
	rs, err := bench(o, e.Hosts(), "--clients", "32", "--outstanding", "16", "--size", strconv.Itoa(o.size),
		"--populate", strconv.Itoa(o.znodes), "--keep")
	if err != nil {
		return err
	}
	ops := 0.0
	if len(rs) > 0 {
		ops = rs[0].OpsPerSec
	}
	fmt.Fprintf(stdout, "%-10s populate: %s (%.0f creates/s)\n", kind, time.Since(t0).Round(100*time.Millisecond), ops)
	rssLine("populated:")
	time.Sleep(10 * time.Second)
	rssLine("10 s later:")
	// herd returns free heap memory to the OS after a minute without a
	// collection (heapTrimQuiet in cmd/herd).
	time.Sleep(65 * time.Second)
	rssLine("75 s later:")

	// Restart a follower and time until it has caught up: it answers a
	// local read of the last znode the populate phase created, and reports
	// the leader's zxid.
	victim := -1
	for i := range e.PIDs() {
		if m, err := e.Mode(i); err == nil && m == "follower" {
			victim = i
			break
		}
	}
	if victim < 0 {
		return errors.New("no follower to restart")
	}
	if err := e.Kill(victim); err != nil {
		return err
	}
	t1 := time.Now()
	if err := e.Restart(victim); err != nil {
		return err
	}
	ready := time.Since(t1)
	// Wait until the restarted server's node count matches the leader's.
	want := nodeCount(e, e.Leader())
	for time.Since(t1) < 5*time.Minute && nodeCount(e, victim) < want {
		time.Sleep(50 * time.Millisecond)
	}
	caught := time.Since(t1)
	fmt.Fprintf(stdout, "%-10s restart of a follower (kill -9): serving in %s, all %d znodes in %s\n", kind, ready.Round(10*time.Millisecond), want, caught.Round(10*time.Millisecond))
	rssLine("after restart:")
	time.Sleep(10 * time.Second)
	rssLine("10 s after restart:")
	time.Sleep(65 * time.Second)
	rssLine("75 s after restart:")
	// Sanity: the restarted server serves the data.
	c, _, err := zk.Connect([]string{e.Addrs[victim]}, 10*time.Second, zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer c.Close()
	kids, _, err := c.Children("/herd-bench")
	if err != nil {
		return fmt.Errorf("reading the tree from the restarted server: %v", err)
	}
	fmt.Fprintf(stdout, "%-10s restarted server lists %d session directories\n", kind, len(kids))
	return nil
}

func nodeCount(e *ensemble.Ensemble, i int) int {
	out, err := ensemble.FourLetterWord(e.Addrs[i], "srvr", 5*time.Second)
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, "Node count: "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return -1
}

// rss reads a process's resident set size from /proc (0 if unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n << 10
			}
		}
	}
	return 0
}
