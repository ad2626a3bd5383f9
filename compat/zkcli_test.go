package compat

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"herd/compat/ensemble"
)

// zkCliPath is Debian's ZooKeeper shell.
const zkCliPath = "/usr/share/zookeeper/bin/zkCli.sh"

// zkCliNoise matches the lines zkCli prints around every command.
var zkCliNoise = regexp.MustCompile(`^(SLF4J: |Connecting to |WATCHER::|WatchedEvent |Welcome to ZooKeeper!|JLine support is|log4j:)`)

// zkCli runs `zkCli.sh -server hosts args...` (one-shot mode) and returns
// its stdout+stderr without the connection noise, and its exit code.
func zkCli(t *testing.T, hosts string, args ...string) (string, int) {
	t.Helper()
	return runZkCli(t, hosts, "", args...)
}

// zkCliScript feeds lines to an interactive zkCli (stdin mode, ends with
// quit, which closes the session).
func zkCliScript(t *testing.T, hosts string, lines ...string) (string, int) {
	t.Helper()
	return runZkCli(t, hosts, strings.Join(append(lines, "quit"), "\n")+"\n")
}

func runZkCli(t *testing.T, hosts, stdin string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, zkCliPath, append([]string{"-server", hosts}, args...)...)
	// TZ=UTC makes the printed ctime/mtime comparable; small, quick JVM.
	cmd.Env = append(os.Environ(), "TZ=UTC", "CLIENT_JVMFLAGS=-Xmx128m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("zkCli %q timed out; output:\n%s", args, out.String())
	}
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("zkCli %q: %v", args, err)
		}
		code = ee.ExitCode()
	}
	var kept []string
	sc := bufio.NewScanner(strings.NewReader(out.String()))
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		if l == "" || zkCliNoise.MatchString(l) {
			continue
		}
		kept = append(kept, l)
	}
	res := strings.Join(kept, "\n")
	t.Logf("zkCli %s%q -> exit %d in %v:\n%s", strings.ReplaceAll(stdin, "\n", "; "), args, code, time.Since(start).Round(time.Millisecond), res)
	return res, code
}

// zkCliOK runs a one-shot command that must succeed and print want exactly.
func zkCliOK(t *testing.T, hosts, want string, args ...string) {
	t.Helper()
	out, code := zkCli(t, hosts, args...)
	if code != 0 || out != want {
		t.Fatalf("zkCli %q: exit %d, output %q; want exit 0, output %q", args, code, out, want)
	}
}

// zkCliFail runs a one-shot command that must fail with output want.
func zkCliFail(t *testing.T, hosts, want string, args ...string) {
	t.Helper()
	out, code := zkCli(t, hosts, args...)
	if code == 0 || out != want {
		t.Fatalf("zkCli %q: exit %d, output %q; want a non-zero exit, output %q", args, code, out, want)
	}
}

// javaDate formats ms like java.util.Date.toString in UTC.
func javaDate(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("Mon Jan 02 15:04:05 MST 2006")
}

// statLines is how zkCli prints a Stat.
func statLines(st *zk.Stat) string {
	return strings.Join([]string{
		fmt.Sprintf("cZxid = 0x%x", st.Czxid),
		"ctime = " + javaDate(st.Ctime),
		fmt.Sprintf("mZxid = 0x%x", st.Mzxid),
		"mtime = " + javaDate(st.Mtime),
		fmt.Sprintf("pZxid = 0x%x", st.Pzxid),
		fmt.Sprintf("cversion = %d", st.Cversion),
		fmt.Sprintf("dataVersion = %d", st.Version),
		fmt.Sprintf("aclVersion = %d", st.Aversion),
		fmt.Sprintf("ephemeralOwner = 0x%x", st.EphemeralOwner),
		fmt.Sprintf("dataLength = %d", st.DataLength),
		fmt.Sprintf("numChildren = %d", st.NumChildren),
	}, "\n")
}

var statLineRE = regexp.MustCompile(`^(\w+) = (.*)$`)

// parseStat reads the "key = value" lines of zkCli output.
func parseStat(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if g := statLineRE.FindStringSubmatch(l); g != nil {
			m[g[1]] = g[2]
		}
	}
	return m
}

func digestID(user, pw string) string {
	h := sha1.Sum([]byte(user + ":" + pw))
	return user + ":" + base64.StdEncoding.EncodeToString(h[:])
}

// step is one zkCli command and the exact output it must print ("" for
// none).
type step struct{ cmd, want string }

// zkCliSteps runs all steps in one interactive zkCli session and compares
// the whole output with the concatenated expectations.
func zkCliSteps(t *testing.T, hosts string, steps ...step) {
	t.Helper()
	var cmds, wants []string
	for _, s := range steps {
		cmds = append(cmds, s.cmd)
		if s.want != "" {
			wants = append(wants, s.want)
		}
	}
	out, code := zkCliScript(t, hosts, cmds...)
	want := strings.Join(wants, "\n")
	if code != 0 || out != want {
		t.Fatalf("zkCli session %q: exit %d, output:\n%s\n--- want exit 0, output:\n%s\n--- first difference at line %d",
			cmds, code, out, want, firstDiffLine(out, want))
	}
}

func firstDiffLine(a, b string) int {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return i + 1
		}
	}
	return min(len(al), len(bl)) + 1
}

func TestZkCli(t *testing.T) {
	if _, err := os.Stat(zkCliPath); err != nil {
		t.Fatalf("zkCli.sh not installed: %v", err)
	}
	e := startEnsemble(t, nil)
	hosts := e.Hosts()
	c, _ := connect(t, hosts)
	base := uniquePath("zkcli")
	sync := func(p string) {
		t.Helper()
		if _, err := c.Sync(p); err != nil {
			t.Fatalf("sync %s: %v", p, err)
		}
	}
	absent := func(p string) {
		t.Helper()
		sync(p)
		if ok, _, err := c.Exists(p); ok || err != nil {
			t.Fatalf("%s exists (%v, %v), want it gone", p, ok, err)
		}
	}

	t.Run("one_shot", func(t *testing.T) {
		// exit codes and output of single commands
		zkCliOK(t, hosts, "Created "+base, "create", base, "root")
		zkCliFail(t, hosts, "Node already exists: "+base, "create", base, "again")
		// one-shot mode exits without closing its session: the ephemeral
		// stays (until the session expires), owned by that session
		zkCliOK(t, hosts, "Created "+base+"/eph1", "create", "-e", base+"/eph1", "e")
		sync(base)
		st := mustStat(t, c, base+"/eph1")
		if st.EphemeralOwner == 0 || st.DataLength != 1 {
			t.Fatalf("ephemeral created by zkCli: %+v", st)
		}
		// remove it now so nothing later depends on that session's expiry
		if err := c.Delete(base+"/eph1", -1); err != nil {
			t.Fatalf("delete another session's ephemeral: %v", err)
		}
	})

	t.Run("create", func(t *testing.T) {
		b := base
		zkCliSteps(t, hosts,
			step{"create " + b + "/plain hello", "Created " + b + "/plain"},
			step{"create " + b + "/plain again", "Node already exists: " + b + "/plain"},
			step{"create " + b + "/missing/x", "Node does not exist: " + b + "/missing/x"},
			step{"create " + b + "/nodata", "Created " + b + "/nodata"},
			// a node created without data holds null, printed as "null"
			step{"get " + b + "/nodata", "null"},
			step{"create -t 1000 " + b + "/ttl x", "KeeperErrorCode = Unimplemented for " + b + "/ttl"},
			step{"create " + b + "/seq", "Created " + b + "/seq"},
			step{"create -s " + b + "/seq/s- a", "Created " + b + "/seq/s-0000000000"},
			step{"create -s " + b + "/seq/s- b", "Created " + b + "/seq/s-0000000001"},
			step{"create " + b + "/seq/plain", "Created " + b + "/seq/plain"},
			step{"create -s " + b + "/seq/s- c", "Created " + b + "/seq/s-0000000003"},
			step{"create -s -e " + b + "/seq/es- d", "Created " + b + "/seq/es-0000000004"},
			step{"create -e " + b + "/eph2 x", "Created " + b + "/eph2"},
			step{"create -e " + b + "/eph2/kid", "Ephemerals cannot have children: " + b + "/eph2/kid"},
			step{"ls " + b + "/seq", "[es-0000000004, plain, s-0000000000, s-0000000001, s-0000000003]"},
			// (prefixes chosen to match one node each: the order of several is unspecified)
			step{"getEphemerals " + b + "/seq", "[" + b + "/seq/es-0000000004]"},
			step{"getEphemerals " + b + "/eph", "[" + b + "/eph2]"},
			step{"getEphemerals " + b + "/plain", "[]"},
		)
		sync(base)
		d, st, err := c.Get(base + "/plain")
		if err != nil || string(d) != "hello" || st.Version != 0 || st.DataLength != 5 || st.EphemeralOwner != 0 {
			t.Fatalf("go-zk get of zkCli-created node: %q %+v %v", d, st, err)
		}
		if d, st, err := c.Get(base + "/nodata"); err != nil || d != nil || st.DataLength != 0 {
			t.Fatalf("go-zk get of a node created without data: %q %+v %v", d, st, err)
		}
		// quit closed the session: its ephemerals are gone
		absent(base + "/seq/es-0000000004")
		absent(base + "/eph2")
	})

	t.Run("read", func(t *testing.T) {
		sync(base)
		kids, st, err := c.Children(base)
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(kids)
		list := "[" + strings.Join(kids, ", ") + "]"
		if list != "[nodata, plain, seq]" {
			t.Fatalf("go-zk children %s", list)
		}
		_, pst, err := c.Get(base + "/plain")
		if err != nil {
			t.Fatal(err)
		}
		b := base
		zkCliSteps(t, hosts,
			// zkCli may be connected to another server than go-zk: sync first
			step{"sync " + b, "Sync is OK"},
			step{"ls " + b, list},
			step{"ls -s " + b, list + "\n" + statLines(st)},
			step{"ls -R " + b + "/seq", strings.Join([]string{b + "/seq", b + "/seq/plain", b + "/seq/s-0000000000",
				b + "/seq/s-0000000001", b + "/seq/s-0000000003"}, "\n")},
			step{"ls " + b + "/none", "Node does not exist: " + b + "/none"},
			step{"ls /zookeeper", "[config, quota]"},
			step{"getAllChildrenNumber " + b, "7"},
			step{"get " + b + "/plain", "hello"},
			step{"get -s " + b + "/plain", "hello\n" + statLines(pst)},
			step{"get " + b + "/none", "Node does not exist: " + b + "/none"},
			step{"stat " + b, statLines(mustStat(t, c, b))},
			step{"stat " + b + "/seq", statLines(mustStat(t, c, b+"/seq"))},
			step{"stat " + b + "/nodata", statLines(mustStat(t, c, b+"/nodata"))},
			step{"stat /", statLines(mustStat(t, c, "/"))},
			step{"stat " + b + "/none", "Node does not exist: " + b + "/none"},
			step{"getAcl " + b + "/plain", "'world,'anyone\n: cdrwa"},
			step{"getAcl /zookeeper/config", "'world,'anyone\n: r"},
			step{"whoami", "Auth scheme: User\nip: 127.0.0.1"},
		)
	})

	t.Run("config", func(t *testing.T) {
		want := expectedConfig(t, e)
		zkCliSteps(t, hosts, step{"config", want}, step{"get /zookeeper/config", want})
	})

	t.Run("set_delete", func(t *testing.T) {
		b, p := base, base+"/plain"
		for _, q := range []string{b + "/tree", b + "/tree/a", b + "/tree/a/b", b + "/tree/a/b/c", b + "/tree/d"} {
			mustCreate(t, c, q, []byte("x"), 0)
		}
		before := mustStat(t, c, p)
		out, code := zkCliScript(t, hosts,
			"sync "+b,
			"set "+p+" world",
			"set -v 5 "+p+" x",
			"set -v 1 "+p+" v-ok",
			"set "+b+"/none x",
			"setAcl -v 5 "+p+" world:anyone:cdrwa",
			"delete "+b+"/seq",
			"delete -v 5 "+b+"/nodata",
			"delete -v 0 "+b+"/nodata",
			"delete "+b+"/nodata",
			"deleteall "+b+"/tree",
			"deleteall "+b+"/seq",
			"set -s "+p+" again!",
		)
		sync(b)
		_, st, err := c.Get(p)
		if err != nil {
			t.Fatal(err)
		}
		want := strings.Join([]string{
			"Sync is OK",
			"version No is not valid : " + p,
			"Node does not exist: " + b + "/none",
			"version No is not valid : " + p,
			"Node not empty: " + b + "/seq",
			"version No is not valid : " + b + "/nodata",
			"Node does not exist: " + b + "/nodata",
			statLines(st),
		}, "\n")
		if code != 0 || out != want {
			t.Fatalf("zkCli set/delete session: exit %d, output:\n%s\n--- want:\n%s\n--- first difference at line %d", code, out, want, firstDiffLine(out, want))
		}
		if st.Version != before.Version+3 || st.Czxid != before.Czxid || st.Mzxid <= before.Mzxid || st.DataLength != 6 || st.Aversion != 0 {
			t.Fatalf("stat after three sets: %+v (before %+v)", st, before)
		}
		absent(b + "/nodata")
		absent(b + "/tree")
		absent(b + "/seq")
	})

	t.Run("quota", func(t *testing.T) {
		// setquota, listquota and delquota, and the stats the server keeps
		// in /zookeeper/quota/<path>/zookeeper_stats as znodes come and go.
		q := base + "/q"
		if _, err := c.Create(base, nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !isErr(err, zk.ErrNodeExists) {
			t.Fatal(err) // made by one_shot, unless -run picked this subtest alone
		}
		mustCreate(t, c, q, []byte("abc"), 0)
		mustCreate(t, c, q+"/a", []byte("12345"), 0)
		mustCreate(t, c, q+"/b", nil, 0)
		mustCreate(t, c, q+"/a/c", []byte("xy"), 0)
		limits, stats := "/zookeeper/quota"+q+"/zookeeper_limits", "/zookeeper/quota"+q+"/zookeeper_stats"
		list := func(quota, stat string) string {
			return "absolute path is " + limits + "\nOutput quota for " + q + " " + quota + "\nOutput stat for " + q + " " + stat
		}
		zkCliSteps(t, hosts,
			step{"sync " + q, "Sync is OK"},
			step{"setquota -n 3 " + q, "[Warning]: the count quota you create is less than the existing count:4"},
			step{"listquota " + q, list("count=3,bytes=-1=;byteHardLimit=-1;countHardLimit=-1", "count=4,bytes=10")},
			step{"create " + q + "/d 1234", "Created " + q + "/d"},
			step{"set " + q + "/d 12", ""},
			step{"delete " + q + "/b", ""},
			step{"create -e " + q + "/e 1", "Created " + q + "/e"},
			step{"setquota -n 2 " + q + "/a", q + "/a has a parent " + q + " which has a quota"},
			step{"listquota " + q, list("count=3,bytes=-1=;byteHardLimit=-1;countHardLimit=-1", "count=5,bytes=13")},
		)
		// The ephemeral went with zkCli's session; the stats node changed
		// in place, without a new version or mzxid.
		sync(stats)
		d, st, err := c.Get(stats)
		if err != nil || string(d) != "count=4,bytes=12" || st.Version != 0 || st.Mzxid != st.Czxid || st.DataLength != int32(len(d)) {
			t.Fatalf("stats after the session closed: %q %+v %v, want count=4,bytes=12 at version 0", d, st, err)
		}
		zkCliSteps(t, hosts,
			step{"sync " + q, "Sync is OK"},
			step{"delquota -n " + q, ""},
			step{"listquota " + q, list("count=-1,bytes=-1=;byteHardLimit=-1;countHardLimit=-1", "count=4,bytes=12")},
			step{"delquota " + q, ""},
			step{"listquota " + q, "absolute path is " + limits + "\nquota for " + q + " does not exist."},
		)
		absent(limits)
		absent("/zookeeper/quota" + base)
	})

	t.Run("acl", func(t *testing.T) {
		sec := base + "/secret"
		mustCreate(t, c, sec, []byte("s"), 0)
		id := digestID("alice", "secret")
		zkCliSteps(t, hosts,
			step{"sync " + sec, "Sync is OK"},
			step{"setAcl " + sec + " digest:" + id + ":cdrwa,world:anyone:r", ""},
			// not alice: digest ids are masked without ADMIN
			step{"getAcl " + sec, "'digest,'alice:x\n: cdrwa\n'world,'anyone\n: r"},
			step{"set " + sec + " x", "Insufficient permission : " + sec},
			step{"setAcl " + sec + " world:anyone:cdrwa", "Insufficient permission : " + sec},
			step{"get " + sec, "s"},
		)
		sync(sec)
		acl, st, err := c.GetACL(sec)
		wantACL := []zk.ACL{{Perms: zk.PermAll, Scheme: "digest", ID: "alice:x"}, {Perms: zk.PermRead, Scheme: "world", ID: "anyone"}}
		if err != nil || !slices.Equal(acl, wantACL) || st.Aversion != 1 {
			t.Fatalf("go-zk getACL after zkCli setAcl: %+v aversion %d %v; want %+v", acl, st.Aversion, err, wantACL)
		}
		mine := base + "/mine"
		out, code := zkCliScript(t, hosts,
			"addauth digest alice:secret",
			"whoami",
			"set "+sec+" changed",
			"getAcl "+sec,
			"get "+sec,
			"create "+mine+" m",
			// the auth scheme expands to the session's digest id
			"setAcl "+mine+" auth::cdrwa",
			"getAcl "+mine)
		lines := strings.Split(out, "\n")
		if code != 0 || len(lines) < 3 || lines[0] != "Auth scheme: User" {
			t.Fatalf("zkCli with addauth: exit %d\n%s", code, out)
		}
		// whoami lists the ids in no particular order
		if ids := slices.Sorted(slices.Values(lines[1:3])); !slices.Equal(ids, []string{"digest: alice", "ip: 127.0.0.1"}) {
			t.Fatalf("whoami after addauth: %q, want ip: 127.0.0.1 and digest: alice", lines[:3])
		}
		want := "'digest,'" + id + "\n: cdrwa\n'world,'anyone\n: r\nchanged\nCreated " + mine + "\n'digest,'" + id + "\n: cdrwa"
		if got := strings.Join(lines[3:], "\n"); got != want {
			t.Fatalf("zkCli with addauth:\n%s\n--- want:\n%s", got, want)
		}
		if _, _, err := c.Get(mine); !isErr(err, zk.ErrNoAuth) {
			t.Fatalf("go-zk get of a node only alice may read: %v, want ErrNoAuth", err)
		}
	})
}

// expectedConfig is what `config` prints for the ensemble: every
// server.N line of zoo.cfg with ":participant" appended, then version=0.
func expectedConfig(t *testing.T, e *ensemble.Ensemble) string {
	t.Helper()
	cfg, err := os.ReadFile(e.ConfigPath(0))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(cfg), "\n") {
		if strings.HasPrefix(l, "server.") {
			lines = append(lines, l+":participant")
		}
	}
	if len(lines) != len(e.Addrs) {
		t.Fatalf("zoo.cfg has %d server lines, want %d", len(lines), len(e.Addrs))
	}
	return strings.Join(append(lines, "version=0"), "\n")
}
