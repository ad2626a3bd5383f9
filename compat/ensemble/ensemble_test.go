package ensemble

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

var (
	target  = Herd
	herdBin string
)

func TestMain(m *testing.M) {
	switch t := os.Getenv("HERD_COMPAT_TARGET"); t {
	case "", "herd":
	case "zookeeper", "zk":
		target = ZooKeeper
	default:
		fmt.Fprintf(os.Stderr, "HERD_COMPAT_TARGET=%q: want herd or zookeeper\n", t)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "herd-ensemble-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if target == Herd {
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

// TestConfigAndFailure starts a "server" that exits at once: Start must
// fail fast with the server's output in the error, and leave the standard
// zoo.cfg and myid files in the given Dir.
func TestConfigAndFailure(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	_, err := Start(Herd, Options{
		Servers: 3,
		HerdBin: "/bin/false",
		Dir:     dir,
		Extra:   map[string]string{"extendedTypesEnabled": "true", "tickTime": "1000"},
	})
	if err == nil {
		t.Fatal("Start with a server that exits succeeded")
	}
	if time.Since(start) > 20*time.Second {
		t.Fatalf("Start took %v to notice the server exited", time.Since(start))
	}
	if !strings.Contains(err.Error(), "process exited") || !strings.Contains(err.Error(), "tail of server 1 output") ||
		!strings.Contains(err.Error(), "/bin/false keeper --config "+filepath.Join(dir, "server-1", "zoo.cfg")) {
		t.Fatalf("error lacks the exit and the log tail:\n%v", err)
	}
	cfg, err := os.ReadFile(filepath.Join(dir, "server-2", "zoo.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(cfg)), "\n")
	keys := map[string]string{}
	var order []string
	for _, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			t.Fatalf("bad zoo.cfg line %q", l)
		}
		if _, dup := keys[k]; dup {
			t.Fatalf("duplicate key %q in zoo.cfg", k)
		}
		keys[k] = v
		order = append(order, k)
	}
	want := map[string]string{
		"tickTime": "1000", "initLimit": "10", "syncLimit": "5",
		"dataDir":                filepath.Join(dir, "server-2", "data"),
		"clientPortAddress":      "127.0.0.1",
		"4lw.commands.whitelist": "*", "admin.enableServer": "false", "extendedTypesEnabled": "true",
	}
	for k, v := range want {
		if keys[k] != v {
			t.Errorf("zoo.cfg %s=%q, want %q", k, keys[k], v)
		}
	}
	for _, k := range []string{"clientPort", "server.1", "server.2", "server.3"} {
		if keys[k] == "" {
			t.Errorf("zoo.cfg lacks %s", k)
		}
	}
	if !strings.HasPrefix(keys["server.2"], "127.0.0.1:") || strings.Count(keys["server.2"], ":") != 2 {
		t.Errorf("server.2=%q, want 127.0.0.1:quorum:election", keys["server.2"])
	}
	if order[0] != "tickTime" {
		t.Errorf("zoo.cfg key order %v", order)
	}
	myid, err := os.ReadFile(filepath.Join(dir, "server-2", "data", "myid"))
	if err != nil || strings.TrimSpace(string(myid)) != "2" {
		t.Fatalf("myid of server 2: %q %v", myid, err)
	}
}

// TestStandalone runs one server of the selected target through Kill and
// Restart.
func TestStandalone(t *testing.T) {
	e, err := Start(target, Options{Servers: 1, HerdBin: herdBin, JVMFlags: FastStartJVMFlags})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Stop()
	dir := e.Dir
	if len(e.Addrs) != 1 || e.Hosts() != e.Addrs[0] || !strings.HasPrefix(e.Hosts(), "127.0.0.1:") {
		t.Fatalf("Addrs %v Hosts %q", e.Addrs, e.Hosts())
	}
	if m, err := e.Mode(0); err != nil || m != "standalone" {
		t.Fatalf("Mode: %q %v, want standalone", m, err)
	}
	if e.Leader() != 0 {
		t.Fatalf("Leader() = %d", e.Leader())
	}
	if p := e.PIDs(); len(p) != 1 || p[0] <= 0 {
		t.Fatalf("PIDs %v", p)
	}
	if out, err := FourLetterWord(e.Addrs[0], "ruok", 5*time.Second); err != nil || out != "imok" {
		t.Fatalf("ruok: %q %v", out, err)
	}
	if err := e.Kill(0); err != nil {
		t.Fatal(err)
	}
	if p := e.PIDs(); p[0] != 0 {
		t.Fatalf("PIDs after Kill: %v", p)
	}
	if _, err := FourLetterWord(e.Addrs[0], "ruok", time.Second); err == nil {
		t.Fatal("killed server still answers")
	}
	if err := e.Restart(0); err != nil {
		t.Fatal(err)
	}
	if p := e.PIDs(); p[0] <= 0 {
		t.Fatalf("PIDs after Restart: %v", p)
	}
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("Stop left %s behind (%v)", dir, err)
	}
	if err := e.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}
