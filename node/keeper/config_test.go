package keeper

import (
	"strings"
	"testing"
	"time"
)

const sampleZooCfg = `# a zoo.cfg as ZooKeeper's docs show it
tickTime=2000
initLimit=10
syncLimit=5
dataDir=/var/lib/zookeeper
clientPort=2181
clientPortAddress=127.0.0.1
server.2=127.0.0.1:2889:3889
server.1=127.0.0.1:2888:3888
4lw.commands.whitelist=ruok, srvr,stat
autopurge.purgeInterval=1
admin.enableServer=false
someday.maybe=1
`

// A zoo.cfg is read as ZooKeeper reads it: every key it knows, defaults for
// the rest, servers sorted by id, what herd does not use warned about.
func TestParseZooCfg(t *testing.T) {
	c, err := ParseZooCfg(sampleZooCfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.TickTime != 2*time.Second || c.InitLimit != 10 || c.SyncLimit != 5 || c.DataDir != "/var/lib/zookeeper" || c.ClientAddr != "127.0.0.1:2181" {
		t.Fatalf("parsed %+v", c)
	}
	if len(c.Servers) != 2 || c.Servers[0].ID != 1 || c.Servers[0].PeerAddr() != "127.0.0.1:2888" || c.Servers[1].ID != 2 {
		t.Fatalf("servers %+v", c.Servers)
	}
	if strings.Join(c.FourLetter, ",") != "ruok,srvr,stat" {
		t.Fatalf("4lw whitelist %q", c.FourLetter)
	}
	if c.MinSessionTimeout != 4*time.Second || c.MaxSessionTimeout != 40*time.Second || c.MaxBuffer != DefaultMaxBuffer {
		t.Fatalf("defaults: session timeouts %v..%v, jute.maxbuffer %d", c.MinSessionTimeout, c.MaxSessionTimeout, c.MaxBuffer)
	}
	warned := strings.Join(c.Warnings, "\n")
	for _, w := range []string{"autopurge.purgeInterval", "admin.enableServer", "line 13: unknown key someday.maybe"} {
		if !strings.Contains(warned, w) {
			t.Errorf("no warning about %s in:\n%s", w, warned)
		}
	}
	// ZooKeeper's snapshot cadence, and herd's: a snapshot also waits for
	// as much WAL as it is big, unless snapCount says otherwise.
	if c.SnapshotEvery != 100_000 || c.SnapshotLogRatio != 1 {
		t.Fatalf("snapshots every %d entries, log ratio %v; want 100000 and 1", c.SnapshotEvery, c.SnapshotLogRatio)
	}
	c, err = ParseZooCfg(sampleZooCfg + "snapCount=5000\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.SnapshotEvery != 5000 || c.SnapshotLogRatio >= 0 {
		t.Fatalf("snapCount=5000: snapshots every %d entries, log ratio %v; want 5000 and off", c.SnapshotEvery, c.SnapshotLogRatio)
	}
}

// Bad input is a one-line error that names the line.
func TestParseZooCfgErrors(t *testing.T) {
	base := "dataDir=/d\nclientPort=2181\n"
	for _, c := range []struct{ cfg, want string }{
		{base + "tickTime=two\n", `zoo.cfg line 3: tickTime="two": want a non-negative integer`},
		{base + "tickTime=0\n", `line 3: tickTime="0": must be positive`},
		{base + "clientPort=2182\n", "line 3: clientPort is set again (first on line 2)"},
		{base + "just words\n", `line 3: "just words" is not key=value`},
		{base + "server.1=127.0.0.1\n", "zoo.cfg line 3: "},
		{base + "server.1=127.0.0.1:2888:3888\nserver.01=127.0.0.1:2889:3889\n", "server.1 appears twice"},
		{base + "extendedTypesEnabled=yes please\n", "want true or false"},
		{base + "minSessionTimeout=9000\nmaxSessionTimeout=8000\n", "minSessionTimeout 9s is above maxSessionTimeout 8s"},
		{"dataDir=/d\n", "clientPort is missing"},
		{"clientPort=2181\n", "dataDir is missing"},
		{base + "snapCount=-3\n", "want a non-negative integer"},
	} {
		_, err := ParseZooCfg(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line containing %q", c.cfg, err, c.want)
		}
	}
}
