package main

import (
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"herd/sim"
)

func runSim(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seed := fs.Uint64("seed", 0, "seed to run (default: a random one, printed)")
	seeds := fs.Int("seeds", 0, "run this many consecutive seeds starting at --seed")
	scenario := fs.String("scenario", sim.DefaultScenario, "scenario to run (see --list)")
	swarm := fs.Bool("swarm", true, "draw fault kinds, rates and the environment from the seed")
	bug := fs.String("bug", "", "switch on one of the scenario's planted bugs (to see a checker catch it)")
	list := fs.Bool("list", false, "list scenarios and their planted bugs")
	logEvents := fs.Bool("log", false, "print every delivered event and fault to stderr (single seed)")
	jobs := fs.Int("jobs", runtime.GOMAXPROCS(0), "seeds run in parallel with --seeds")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: herd sim [--seed N] [--seeds K] [--scenario NAME] [--swarm=false] [--bug NAME] [--log] [--list]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "herd sim: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *list {
		for _, s := range sim.Scenarios() {
			fmt.Fprintf(stdout, "%-12s %s\n", s.Name, s.Doc)
			bugs := make([]string, 0, len(s.Bugs))
			for b := range s.Bugs {
				bugs = append(bugs, b)
			}
			sort.Strings(bugs)
			for _, b := range bugs {
				fmt.Fprintf(stdout, "%-12s   --bug %s: %s\n", "", b, s.Bugs[b])
			}
		}
		return 0
	}
	if sim.Lookup(*scenario) == nil {
		fmt.Fprintf(stderr, "herd sim: unknown scenario %q (herd sim --list names them)\n", *scenario)
		return 2
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) { seedSet = seedSet || f.Name == "seed" })
	if !seedSet {
		var b [8]byte
		rand.Read(b[:])
		*seed = binary.LittleEndian.Uint64(b[:]) >> 1 // positive when printed as int64 too
	}
	opts := sim.Options{Seed: *seed, Scenario: *scenario, Swarm: *swarm, Bug: *bug}
	if *seeds <= 0 {
		if *logEvents {
			opts.Log = stderr
		}
		return simOne(opts, stdout)
	}
	return simMany(opts, *seeds, max(*jobs, 1), stdout)
}

func simOne(o sim.Options, out io.Writer) int {
	r := sim.Run(o)
	fmt.Fprintf(out, "scenario=%s seed=%d swarm=%v", r.Scenario, r.Seed, o.Swarm)
	if o.Bug != "" {
		fmt.Fprintf(out, " bug=%s", o.Bug)
	}
	fmt.Fprintf(out, "\nfaults: %s\n", orNone(r.Faults))
	fmt.Fprintf(out, "events=%d simulated=%v wall=%v (%.0fx real time)\n",
		r.Events, r.SimTime.Round(time.Millisecond), r.Wall.Round(time.Millisecond), speedup(r))
	code := 0
	if r.OK() {
		fmt.Fprintln(out, "result: ok")
	} else {
		fmt.Fprintf(out, "result: FAIL %v\nreplay: %s\n", r.Failure, r.Replay)
		code = r.Failure.Kind.ExitCode()
	}
	fmt.Fprintf(out, "trace=%016x\n", r.Trace)
	return code
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func speedup(r sim.Result) float64 {
	if r.Wall <= 0 {
		return 0
	}
	return float64(r.SimTime) / float64(r.Wall)
}

// simMany runs count seeds from o.Seed on jobs workers, showing progress, and
// reports failures in seed order so the output does not depend on timing.
func simMany(o sim.Options, count, jobs int, out io.Writer) int {
	results := make([]sim.Result, count)
	var mu sync.Mutex
	done, failed := 0, 0
	var events uint64
	start := time.Now()
	tty := isTerminal(out)
	lastShown := time.Time{}
	show := func(final bool) {
		elapsed := time.Since(start)
		line := fmt.Sprintf("[%d/%d] %d passed, %d failed, %.0f seeds/min, %.1fM events",
			done, count, done-failed, failed, float64(done)/elapsed.Minutes(), float64(events)/1e6)
		switch {
		case tty:
			fmt.Fprintf(out, "\r%-80s", line)
			if final {
				fmt.Fprintln(out)
			}
		case final || time.Since(lastShown) > 5*time.Second:
			fmt.Fprintln(out, line)
			lastShown = time.Now()
		}
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				oi := o
				oi.Seed = o.Seed + uint64(i)
				r := sim.Run(oi)
				mu.Lock()
				results[i] = r
				done++
				events += r.Events
				if !r.OK() {
					failed++
					if tty {
						fmt.Fprintln(out)
					}
					fmt.Fprintf(out, "FAIL seed=%d %s\n", r.Seed, oneLine(r.Failure.Error()))
				}
				show(false)
				mu.Unlock()
			}
		}()
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
	show(true)
	code := 0
	for _, r := range results {
		if !r.OK() {
			fmt.Fprintf(out, "failed: seed=%d %s check=%s\n  %s\n  replay: %s\n",
				r.Seed, r.Failure.Kind, r.Failure.Check, strings.ReplaceAll(r.Failure.Message, "\n", "\n  "), r.Replay)
			if code == 0 {
				code = r.Failure.Kind.ExitCode()
			}
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed\n", count-failed, failed)
	return code
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
