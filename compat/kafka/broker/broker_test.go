package broker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestKFake starts the kfake helper from a server.properties, probes it,
// restarts it and stops it, and checks that the process is gone.
func TestKFake(t *testing.T) {
	bin, err := BuildKFake(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Start(KFake, Options{Bin: bin, BrokerID: 3, Partitions: 4, Extra: map[string]string{"num.partitions": "5", "x.y": "z"}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	props, err := os.ReadFile(b.Config)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"broker.id=3\n", "listeners=PLAINTEXT://" + b.Addr + "\n", "log.dirs=" + filepath.Join(b.Dir, "logs") + "\n",
		"num.partitions=5\n", "auto.create.topics.enable=false\n", "x.y=z\n"} {
		if !strings.Contains(string(props), want) {
			t.Errorf("server.properties lacks %q:\n%s", want, props)
		}
	}
	if strings.Count(string(props), "num.partitions=") != 1 {
		t.Errorf("Extra did not replace num.partitions:\n%s", props)
	}
	if b.NodeID != 0 {
		t.Errorf("kfake node id %d, want 0", b.NodeID)
	}
	for _, k := range []int16{0, 1, 2, 3, 18, 19, 20} {
		if _, ok := b.APIVersions[k]; !ok {
			t.Errorf("ApiVersions lacks key %d: %v", k, b.APIVersions)
		}
	}
	pid := b.PID()
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	if b.PID() == pid || b.PID() == 0 {
		t.Errorf("restart: pid %d, was %d", b.PID(), pid)
	}
	p, err := Probe(b.Addr, 2*time.Second)
	if err != nil || len(p.Brokers) != 1 || p.Controller != 0 {
		t.Errorf("probe after restart: %v %+v", err, p)
	}
	dir := b.Dir
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	if !b.Exited() || b.PID() != 0 {
		t.Errorf("still running after Stop")
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Stop left %s: %v", dir, err)
	}
	if _, err := Probe(b.Addr, time.Second); err == nil {
		t.Errorf("something still answers at %s", b.Addr)
	}
}

// A broker that exits at once (bad config) fails Start quickly, with its
// output in the error.
func TestStartFailure(t *testing.T) {
	bin, err := BuildKFake(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Start(KFake, Options{Bin: bin, Extra: map[string]string{"listeners": "PLAINTEXT://0.0.0.0:1"}})
	if err == nil || !strings.Contains(err.Error(), "process exited") || !strings.Contains(err.Error(), "want PLAINTEXT://127.0.0.1:port") {
		t.Errorf("Start with a bad listener: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v", took)
	}
	if _, err := Start("nope", Options{Bin: bin}); err == nil {
		t.Errorf("unknown kind accepted")
	}
}
