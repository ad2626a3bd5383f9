// Package compat holds herd's ZooKeeper compatibility suite: kazoo scripts,
// Debian's zkCli.sh and go-zookeeper, run against a local 3-server ensemble
// started from ordinary zoo.cfg files (package compat/ensemble).
//
// The target is chosen with HERD_COMPAT_TARGET: "herd" (default; the
// binary is built from herd/cmd/herd) or "zookeeper" (Apache ZooKeeper 3.8
// from the Debian packages, the oracle the suite is validated against).
package compat

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"herd/compat/ensemble"
)

var (
	target  ensemble.Kind
	herdBin string
)

func TestMain(m *testing.M) {
	switch t := os.Getenv("HERD_COMPAT_TARGET"); t {
	case "", "herd":
		target = ensemble.Herd
	case "zookeeper", "zk":
		target = ensemble.ZooKeeper
	default:
		fmt.Fprintf(os.Stderr, "HERD_COMPAT_TARGET=%q: want herd or zookeeper\n", t)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "herd-compat-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if target == ensemble.Herd {
		herdBin = filepath.Join(dir, "herd")
		build := exec.Command("go", "build", "-o", herdBin, "herd/cmd/herd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "building herd:", err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startEnsemble starts a 3-server ensemble of the selected target; it is
// stopped when t finishes. On failure the server logs are kept and their
// directory is reported.
func startEnsemble(t *testing.T, extra map[string]string) *ensemble.Ensemble {
	t.Helper()
	dir, err := os.MkdirTemp("", "herd-compat-ens-")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	e, err := ensemble.Start(target, ensemble.Options{
		Servers: 3, HerdBin: herdBin, Dir: dir, Extra: extra,
		JVMFlags: ensemble.FastStartJVMFlags, // only used for kind zookeeper
	})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("starting %s ensemble: %v", target, err)
	}
	t.Logf("%s ensemble at %s (pids %v) ready in %v", target, e.Hosts(), e.PIDs(), time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		stopStart := time.Now()
		defer func() { t.Logf("ensemble stopped in %v", time.Since(stopStart).Round(time.Millisecond)) }()
		if err := e.Stop(); err != nil {
			t.Errorf("stopping ensemble: %v", err)
		}
		if t.Failed() && os.Getenv("HERD_COMPAT_KEEP") != "" {
			t.Logf("server configs and logs kept in %s", dir)
			return
		}
		if t.Failed() {
			for i := range e.Addrs {
				t.Logf("--- server %d output (tail) ---\n%s", i+1, lastN(e.LogTail(i), 30))
			}
		}
		os.RemoveAll(dir)
	})
	return e
}

func lastN(s string, n int) string {
	lines := 0
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			lines++
			if lines > n {
				return s[i+1:]
			}
		}
	}
	return s
}
