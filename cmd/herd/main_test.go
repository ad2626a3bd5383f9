package main

import (
	"bytes"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// runAsHerd: the test binary runs main itself, as the herd binary would
	// (TestBenchBrokerReexec), and says what GODEBUG it started with.
	if os.Getenv(runAsHerd) == "1" {
		fmt.Fprintf(os.Stderr, "started with GODEBUG=%q\n", os.Getenv("GODEBUG"))
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

const runAsHerd = "HERD_TEST_RUN_AS_HERD"

func herd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := dispatch(args, &out, &errb)
	return out.String() + errb.String(), code
}

var traceLine = regexp.MustCompile(`(?m)\Atrace=[0-9a-f]{16}\z`)

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// The acceptance lines: the same seed prints the same trace line,
// another seed another one, and a sweep ends with "K passed, 0 failed".
func TestSimCommand(t *testing.T) {
	a, code := herd(t, "sim", "--seed", "42")
	if code != 0 || !traceLine.MatchString(lastLine(a)) {
		t.Fatalf("herd sim --seed 42: exit %d\n%s", code, a)
	}
	b, _ := herd(t, "sim", "--seed", "42")
	c, _ := herd(t, "sim", "--seed", "43")
	if lastLine(a) != lastLine(b) {
		t.Fatalf("seed 42 twice: %s vs %s", lastLine(a), lastLine(b))
	}
	if lastLine(a) == lastLine(c) {
		t.Fatalf("seeds 42 and 43 gave the same %s", lastLine(a))
	}
	many, code := herd(t, "sim", "--seed", "1", "--seeds", "20")
	if code != 0 || lastLine(many) != "20 passed, 0 failed" {
		t.Fatalf("sweep: exit %d, last line %q", code, lastLine(many))
	}
}

func TestSimCommandReportsFailures(t *testing.T) {
	out, code := herd(t, "sim", "--seed", "1", "--seeds", "40", "--bug", "skip-dir-sync")
	if code != 129 {
		t.Fatalf("exit %d, want 129 (correctness)\n%s", code, out)
	}
	if !strings.Contains(out, "replay: herd sim --seed ") || !regexp.MustCompile(`\d+ passed, [1-9]\d* failed\n?$`).MatchString(out) {
		t.Fatalf("failure output lacks a replay command or the summary:\n%s", out)
	}
}

func TestBadInvocations(t *testing.T) {
	for _, args := range [][]string{{"nope"}, {"sim", "--scenario", "nope"}, {"sim", "extra"}, {"sim", "--seed", "x"}} {
		if out, code := herd(t, args...); code != 2 {
			t.Errorf("herd %v: exit %d, want 2\n%s", args, code, out)
		}
	}
	if out, code := herd(t, "sim", "--list"); code != 0 || !strings.Contains(out, "demo ") {
		t.Errorf("--list: exit %d\n%s", code, out)
	}
}
