package jepsen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Tests that change routing or mount file systems run in namespaces of
// their own: runInNamespaces starts the test binary again inside them.

// netnsEnv marks a test process that runs inside namespaces of its own
// (runInNamespaces), where it may change routing and mount file systems.
const netnsEnv = "HERD_JEPSEN_NETNS"

// serverHost is server id's address: one per server, so that a filter
// can drop the packets between two of them (the servers dial their peers
// from the address they listen on).
func serverHost(id int) string { return fmt.Sprintf("127.0.0.%d", 10+id) }

// mountTmpfs mounts a tmpfs of size (mount's syntax, "6m") on dir, and
// unmounts it when the test ends, before a t.TempDir holding it is
// removed if the call comes after t.TempDir's. It returns a function that
// gives the mount another size.
func mountTmpfs(t *testing.T, dir, size string) (resize func(size string)) {
	t.Helper()
	mount := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("mount", args...).CombinedOutput(); err != nil {
			t.Fatalf("mount %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	mount("-t", "tmpfs", "-o", "size="+size, "tmpfs", dir)
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return func(size string) { mount("-o", "remount,size="+size, dir) }
}

// diskFullLine is the last line of a server's output that says its disk is
// full, or "".
func diskFullLine(output string) string {
	var line string
	for _, l := range strings.Split(output, "\n") {
		if strings.Contains(l, "no space left on device") {
			line = strings.TrimSpace(l)
		}
	}
	return line
}

func tc(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
		t.Fatalf("tc %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func ip(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// netnsSetup prepares a fresh network namespace: loopback up, with an
// ingress qdisc for blackhole's filters, and drop0, a veth whose peer is
// down, for them to send what they drop to.
func netnsSetup(t *testing.T) {
	t.Helper()
	ip(t, "link", "set", "lo", "up")
	ip(t, "link", "add", "drop0", "type", "veth", "peer", "name", "drop1")
	ip(t, "link", "set", "drop0", "up")
	tc(t, "qdisc", "add", "dev", "lo", "ingress")
}

// inNamespaces reports whether t runs in namespaces of its own, set up by
// netnsSetup. If not, it runs t again inside them, with that run's result
// as t's, and returns false: the caller returns at once.
func inNamespaces(t *testing.T) bool {
	t.Helper()
	if os.Getenv(netnsEnv) == "" {
		runInNamespaces(t, t.Name())
		return false
	}
	netnsSetup(t)
	return true
}

// runInNamespaces runs test (this binary's test of that name) again in a
// network and a mount namespace of its own, where it may change routing
// and mount file systems without touching the machine's: `unshare -nm` as
// root, else `unshare -rnm` (an unprivileged user namespace). Its output is
// this test's log.
func runInNamespaces(t *testing.T, test string) {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatal("this test needs `ip` (Debian package iproute2)")
	}
	if _, err := exec.LookPath("tc"); err != nil {
		t.Fatal("this test needs `tc` (Debian package iproute2)")
	}
	unshare := []string{"unshare", "-nm"}
	if os.Geteuid() != 0 {
		unshare = []string{"unshare", "-rnm"}
	}
	if out, err := exec.Command(unshare[0], append(unshare[1:], "true")...).CombinedOutput(); err != nil {
		t.Fatalf("this test needs namespaces of its own, and `%s true` failed: %v %s\n(run as root, or enable unprivileged user namespaces: sysctl kernel.unprivileged_userns_clone=1)",
			strings.Join(unshare, " "), err, bytes.TrimSpace(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := append(unshare[1:], os.Args[0], "-test.run", "^"+test+"$", "-test.count", "1", "-test.v")
	cmd := exec.CommandContext(ctx, unshare[0], args...)
	cmd.Env = append(os.Environ(), netnsEnv+"=1", herdBinEnv+"="+herdBin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		t.Log(l)
	}
	if err != nil {
		t.Fatalf("%s in its namespaces: %v", test, err)
	}
	if !strings.Contains(out.String(), "--- PASS: "+test+" ") {
		t.Fatalf("%s did not run in its namespaces", test)
	}
}
