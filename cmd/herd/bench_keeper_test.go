package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"
)

func TestLatHistBuckets(t *testing.T) {
	var vs []uint64
	for v := range uint64(2000) {
		vs = append(vs, v)
	}
	for e := range 45 {
		p := uint64(1) << e
		vs = append(vs, p-1, p, p+1)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		vs = append(vs, r.Uint64N(1<<42))
	}
	slices.Sort(vs)
	prev := -1
	for _, v := range vs {
		i := histBucket(v)
		low, width := histRange(i)
		if v < low || v >= low+width {
			t.Fatalf("value %d in bucket %d = [%d, %d)", v, i, low, low+width)
		}
		// The bucket is narrow relative to its values: that is the
		// histogram's precision promise.
		if width > 1 && width*histSub > low {
			t.Fatalf("bucket %d = [%d, +%d) is wider than 1/%d of its values", i, low, width, histSub)
		}
		if i < prev {
			t.Fatalf("bucket of %d is %d, below the bucket %d of a smaller value", v, i, prev)
		}
		prev = i
	}
}

// exactQuantile is the nearest-rank definition quantile promises, in
// integers (q in thousandths) so that it cannot share a rounding mistake.
func exactQuantile(sorted []time.Duration, permille int) time.Duration {
	rank := (permille*len(sorted) + 999) / 1000
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func TestLatHistQuantiles(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{1, 2, 3, 10, 100, 999, 1000, 1001, 100000} {
		var h latHist
		var all []time.Duration
		for range n {
			// Log-uniform from 50 ns to ~1 s, like latencies with a long tail.
			d := time.Duration(math.Exp(math.Log(50) + r.Float64()*math.Log(2e7)))
			all = append(all, d)
			h.record(d)
		}
		slices.Sort(all)
		// 0.07*100 is 7.000000000000001 in floating point: rank 7, not 8.
		for _, pm := range []int{0, 1, 70, 500, 900, 990, 999, 1000} {
			q := float64(pm) / 1000
			want, got := exactQuantile(all, pm), h.quantile(q)
			if diff := math.Abs(float64(got - want)); diff > float64(want)/(2*histSub)+1 {
				t.Errorf("n=%d q=%v: got %v, want %v (off by %.2f%%)", n, q, got, want, 100*diff/float64(want))
			}
		}
		if h.quantile(1) != all[n-1] || h.max != all[n-1] || h.min != all[0] || h.n != uint64(n) {
			t.Errorf("n=%d: max %v min %v n %d, want %v %v %d", n, h.quantile(1), h.min, h.n, all[n-1], all[0], n)
		}
	}
}

func TestLatHistKnownValues(t *testing.T) {
	var h latHist
	if h.quantile(0.5) != 0 || h.mean() != 0 {
		t.Fatalf("empty histogram: p50 %v mean %v, want 0", h.quantile(0.5), h.mean())
	}
	for i := 1000; i >= 1; i-- { // order must not matter
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {0.999, 999 * time.Microsecond}, {1, 1000 * time.Microsecond}} {
		got := h.quantile(c.q)
		if math.Abs(float64(got-c.want)) > float64(c.want)/(2*histSub) {
			t.Errorf("p%v of 1..1000µs = %v, want %v", c.q*100, got, c.want)
		}
	}
	if h.mean() != 500500*time.Nanosecond {
		t.Errorf("mean %v, want 500.5µs", h.mean())
	}
	var one latHist
	one.record(1234567)
	one.record(-5) // a clock step backwards counts as 0, not as a huge value
	if one.quantile(0.5) != 0 || one.quantile(1) != 1234567 {
		t.Errorf("p50 %v p100 %v, want 0 and 1.234567ms", one.quantile(0.5), one.quantile(1))
	}
}

func TestLatHistMerge(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var a, b, all latHist
	for i := range 5000 {
		d := time.Duration(r.Int64N(int64(50 * time.Millisecond)))
		if i%3 == 0 {
			d *= 20 // b gets the larger values, so merging must grow a's counts
			b.record(d)
		} else {
			a.record(d)
		}
		all.record(d)
	}
	var m latHist
	m.merge(&a)
	m.merge(&latHist{})
	m.merge(&b)
	if m.n != all.n || m.sum != all.sum || m.min != all.min || m.max != all.max {
		t.Fatalf("merged n/sum/min/max %d %v %v %v, want %d %v %v %v", m.n, m.sum, m.min, m.max, all.n, all.sum, all.min, all.max)
	}
	for _, q := range []float64{0.1, 0.5, 0.99, 0.999} {
		if m.quantile(q) != all.quantile(q) {
			t.Errorf("q=%v: merged %v, direct %v", q, m.quantile(q), all.quantile(q))
		}
	}
}

func TestKeeperFlags(t *testing.T) {
	c, err := parseKeeperFlags([]string{"--servers", "127.0.0.1:2181, zk2", "--ops", "delete,get,create,get"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.servers, []string{"127.0.0.1:2181", "zk2:2181"}) {
		t.Errorf("servers %q", c.servers)
	}
	if !slices.Equal(c.ops, []string{"create", "get", "delete"}) {
		t.Errorf("ops %q, want the fixed order create,get,delete", c.ops)
	}
	if c.clients != 32 || c.outstanding != 1 || c.duration != 10*time.Second || c.size != 100 || c.root != "/herd-bench" || c.json || c.keep {
		t.Errorf("defaults: %+v", c)
	}
	if c, err := parseKeeperFlags([]string{"--servers", "h:1", "--ops", "none"}, io.Discard); err != nil || len(c.ops) != 0 {
		t.Errorf("--ops none: %v %q", err, c.ops)
	}

	s := "--servers=127.0.0.1:2181"
	bad := [][]string{
		{},
		{"--servers", ""},
		{"--servers", "127.0.0.1:2181,"},
		{"--servers", "127.0.0.1:0"},
		{"--servers", "127.0.0.1:x"},
		{"--servers", ":2181"},
		{s, "--clients", "0"},
		{s, "--outstanding", "0"},
		{s, "--duration", "0s"},
		{s, "--duration", "ten"},
		{s, "--warmup", "-1s"},
		{s, "--procs", "-1"},
		{s, "--size", "-1"},
		{s, "--size", "2000000"},
		{s, "--keys", "-5"},
		{s, "--populate", "-1"},
		{s, "--populate", "10", "--ops", "get"},
		{s, "--populate", "10", "--keys", "5"},
		{s, "--ops", "create,scan"},
		{s, "--root", "herd"},
		{s, "--root", "/"},
		{s, "--root", "/a/"},
		{s, "--root", "/a//b"},
		{s, "--root", "/a/../b"},
		{s, "--root", "/zookeeper/x"},
		{s, "--connect-timeout", "0s"},
		{s, "--session-timeout", "10ms"},
		{s, "--read-buffer", "-1"},
		{s, "--coalesce-writes=maybe"},
		{s, "--nope"},
		{s, "extra"},
	}
	for _, args := range bad {
		if _, err := parseKeeperFlags(args, io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		}
		var out, errb bytes.Buffer
		if code := benchKeeper(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s%s", args, code, out.String(), errb.String())
		}
	}
	var errb bytes.Buffer
	if code := benchKeeper([]string{"--help"}, io.Discard, &errb); code != 0 || !strings.Contains(errb.String(), "-outstanding") {
		t.Errorf("--help: exit %d\n%s", code, errb.String())
	}
}

// Unreachable servers: a one-line error and exit 1 within a bounded time,
// both when nothing listens and when something accepts but never answers
// (which go-zookeeper alone would wait on for minutes).
func TestKeeperUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	silent := startFakeKeeper(t, func(f *fakeKeeper) { f.silent = true })

	for _, c := range []struct{ addr, want string }{{refused, "refused"}, {silent.addr(), "did not grant a session"}} {
		var out, errb bytes.Buffer
		start := time.Now()
		code := benchKeeper([]string{"--servers", c.addr, "--clients", "3", "--connect-timeout", "1s"}, &out, &errb)
		took := time.Since(start)
		msg := errb.String()
		if code != 1 || !strings.Contains(msg, c.addr) || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") != 1 {
			t.Errorf("%s: exit %d, want 1 and one line naming it (%q):\n%s", c.addr, code, c.want, msg)
		}
		if took > 5*time.Second {
			t.Errorf("%s: took %v", c.addr, took)
		}
	}
}

type keeperLine struct {
	keeperReport
	raw string
}

func runKeeperJSON(t *testing.T, args ...string) ([]keeperLine, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := benchKeeper(append(args, "--json"), &out, &errb)
	var lines []keeperLine
	for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if l == "" {
			continue
		}
		var r keeperLine
		if err := json.Unmarshal([]byte(l), &r.keeperReport); err != nil {
			t.Fatalf("output line %q is not JSON: %v\nstderr:\n%s", l, err, errb.String())
		}
		r.raw = l
		lines = append(lines, r)
	}
	return lines, errb.String(), code
}

// zkExists asks a server whether path exists, through go-zookeeper.
func zkExists(t *testing.T, server, path string) bool {
	t.Helper()
	c, ev, err := zk.Connect([]string{server}, 10*time.Second, zk.WithLogInfo(false), zk.WithLogger(&zkLogger{}))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		c.Close()
		for range ev { // until the client's goroutines are gone
		}
	}()
	ok, _, err := c.Exists(path)
	if err != nil {
		t.Fatalf("exists %s on %s: %v", path, server, err)
	}
	return ok
}

// keeperScenario runs the whole command against servers, fake or real.
func keeperScenario(t *testing.T, servers []string) {
	srv := strings.Join(servers, ",")
	root := fmt.Sprintf("/herd-bench-test-%d", os.Getpid())
	common := []string{"--servers", srv, "--root", root, "--clients", "5", "--outstanding", "3", "--warmup", "100ms"}

	// Phases with a fixed number of keys: create and delete do exactly that
	// much work, set and get run for the duration.
	lines, stderr, code := runKeeperJSON(t, append(common, "--duration", "500ms", "--keys", "101")...)
	if code != 0 || len(lines) != 4 {
		t.Fatalf("exit %d, %d lines\n%s", code, len(lines), stderr)
	}
	for i, l := range lines {
		if l.Phase != keeperPhases[i] || l.Ops == 0 || l.Errors != 0 || l.OpsPerSec <= 0 || l.P50Us <= 0 ||
			l.P50Us > l.P99Us || l.P99Us > l.P999Us || l.P999Us > l.MaxUs || l.Clients != 5 || l.Outstanding != 3 || l.Size != 100 {
			t.Errorf("implausible line %s", l.raw)
		}
	}
	if lines[0].Ops != 101 || lines[3].Ops != 101 {
		t.Errorf("created %d and deleted %d znodes, want 101 each", lines[0].Ops, lines[3].Ops)
	}
	if zkExists(t, servers[0], root) {
		t.Errorf("%s left behind", root)
	}

	// --populate with --keep, then a run that refuses the existing root,
	// then --clean --ops none removes it.
	// (One run writes as go-zookeeper does, a write per request.)
	lines, stderr, code = runKeeperJSON(t, append(common, "--populate", "77", "--keep", "--size", "10", "--coalesce-writes=false")...)
	if code != 0 || len(lines) != 1 || lines[0].Phase != "populate" || lines[0].Ops != 77 || lines[0].Errors != 0 {
		t.Fatalf("populate: exit %d %v\n%s", code, lines, stderr)
	}
	if !zkExists(t, servers[0], root+"/s0004/n0000000014") || zkExists(t, servers[0], root+"/s0004/n0000000015") {
		t.Errorf("populate did not lay out 77 znodes as 16,16,15,15,15 over 5 sessions")
	}
	if _, stderr, code = runKeeperJSON(t, common...); code != 1 || !strings.Contains(stderr, "already exists") {
		t.Errorf("existing root: exit %d\n%s", code, stderr)
	}
	if !zkExists(t, servers[0], root+"/s0004/n0000000014") {
		t.Errorf("a refused run touched the existing root")
	}
	// 77 znodes, 5 session directories and the root.
	if lines, stderr, code = runKeeperJSON(t, append(common, "--clean", "--ops", "none")...); code != 0 || len(lines) != 0 || !strings.Contains(stderr, "(83 znodes)") {
		t.Errorf("--clean --ops none: exit %d %v\n%s", code, lines, stderr)
	}
	if zkExists(t, servers[0], root) {
		t.Errorf("%s left behind after --clean", root)
	}
}

func TestKeeperBenchFake(t *testing.T) {
	a := startFakeKeeper(t, nil)
	b := startFakeKeeper(t, nil)
	a.shared(b) // one tree, like an ensemble
	keeperScenario(t, []string{a.addr(), b.addr()})
	// Sessions go round-robin: 5 sessions over 2 servers is 3 and 2 for
	// each of the 4 runs; the scenario's 5 checks connect to a only.
	a.mu.Lock()
	ga, gb := a.granted, b.granted
	a.mu.Unlock()
	if ga != 4*3+5 || gb != 4*2 {
		t.Errorf("sessions granted: %d and %d, want 17 (4 runs x 3, and 5 checks) and 8", ga, gb)
	}
	if created := a.createdPaths(); len(created) != 0 {
		t.Errorf("left behind: %v", created)
	}
}

// The layout is fixed: which znodes a run creates depends only on the flags.
func TestKeeperLayout(t *testing.T) {
	f := startFakeKeeper(t, nil)
	f.record = true
	_, stderr, code := runKeeperJSON(t, "--servers", f.addr(), "--clients", "3", "--outstanding", "2", "--keys", "10",
		"--ops", "create", "--warmup", "0s", "--root", "/r")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	want := []string{"/r", "/r/s0000", "/r/s0001", "/r/s0002"}
	for s, n := range []int{4, 3, 3} {
		for i := range n {
			want = append(want, fmt.Sprintf("/r/s%04d/n%010d", s, i))
		}
	}
	f.mu.Lock()
	got := slices.Clone(f.log)
	f.mu.Unlock()
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Errorf("created %q\nwant %q", got, want)
	}
}

// Too many failed requests stop the run with a message, and cleanup still
// removes everything.
func TestKeeperErrorBudget(t *testing.T) {
	f := startFakeKeeper(t, func(f *fakeKeeper) { f.failOp, f.failEvery = 5, 7 }) // every 7th setData
	start := time.Now()
	_, stderr, code := runKeeperJSON(t, "--servers", f.addr(), "--clients", "2", "--outstanding", "2", "--keys", "40",
		"--duration", "10s", "--warmup", "0s", "--ops", "set")
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %v: the phase should stop as soon as the errors pass the limit", took)
	}
	if code != 1 || !strings.Contains(stderr, "set: ") || !strings.Contains(stderr, "requests failed") || !strings.Contains(stderr, "invalid arguments") {
		t.Errorf("exit %d, want 1 and a message about failed sets\n%s", code, stderr)
	}
	if created := f.createdPaths(); len(created) != 0 {
		t.Errorf("left behind: %v", created)
	}
}

// TestKeeperBenchLive runs the scenario against a real ensemble, e.g.
// HERD_KEEPER_SERVERS=127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183.
func TestKeeperBenchLive(t *testing.T) {
	s := os.Getenv("HERD_KEEPER_SERVERS")
	if s == "" {
		t.Skip("set HERD_KEEPER_SERVERS=host:port,... to run against a live ZooKeeper or herd")
	}
	keeperScenario(t, strings.Split(s, ","))
}

// fakeKeeper is an in-memory ZooKeeper server with just enough of the wire
// protocol for go-zookeeper's connect, create, delete, exists, getData,
// setData, getChildren2, ping and close, so the command's whole flow can be
// tested without a JVM. Servers made shared use one tree.
type fakeKeeper struct {
	t         *testing.T
	ln        net.Listener
	silent    bool  // accept connections, never answer
	failOp    int32 // fail every failEvery-th request of this opcode
	failEvery int
	record    bool

	mu      *sync.Mutex
	nodes   map[string][]byte
	log     []string // successful creates, if record
	granted int      // sessions
	counts  map[int32]int
	zxid    int64

	wg     sync.WaitGroup
	connMu sync.Mutex
	conns  map[net.Conn]bool
}

func startFakeKeeper(t *testing.T, configure func(*fakeKeeper)) *fakeKeeper {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeKeeper{t: t, ln: ln, mu: &sync.Mutex{}, nodes: map[string][]byte{"/": nil},
		counts: map[int32]int{}, conns: map[net.Conn]bool{}}
	if configure != nil {
		configure(f)
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.connMu.Lock()
			f.conns[c] = true
			f.connMu.Unlock()
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				f.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		f.connMu.Lock()
		for c := range f.conns {
			c.Close()
		}
		f.connMu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *fakeKeeper) addr() string { return f.ln.Addr().String() }

// shared makes o serve f's tree (before any client connects).
func (f *fakeKeeper) shared(o *fakeKeeper) {
	o.mu, o.nodes, o.counts = f.mu, f.nodes, f.counts
}

func (f *fakeKeeper) createdPaths() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for p := range f.nodes {
		if p != "/" {
			out = append(out, p)
		}
	}
	return out
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > 4<<20 {
		return nil, fmt.Errorf("frame of %d bytes", size)
	}
	b := make([]byte, size)
	_, err := io.ReadFull(r, b)
	return b, err
}

// juteBuf reads jute buffers and strings (int32 length, then bytes).
func juteBuf(b []byte) ([]byte, []byte, error) {
	if len(b) < 4 {
		return nil, nil, errors.New("short")
	}
	n := int32(binary.BigEndian.Uint32(b))
	if n < 0 {
		return nil, b[4:], nil
	}
	if int(n) > len(b)-4 {
		return nil, nil, errors.New("short")
	}
	return b[4 : 4+n], b[4+n:], nil
}

func appendJuteBuf(out, b []byte) []byte {
	out = binary.BigEndian.AppendUint32(out, uint32(len(b)))
	return append(out, b...)
}

const (
	zkErrBadArguments = -8
	zkErrUnimpl       = -6
	zkErrNoNode       = -101
	zkErrNodeExists   = -110
	zkErrNotEmpty     = -111
)

func (f *fakeKeeper) serve(c net.Conn) {
	req, err := readFrame(c) // ConnectRequest
	if err != nil || len(req) < 16 {
		return
	}
	if f.silent {
		io.Copy(io.Discard, c)
		return
	}
	f.mu.Lock()
	f.granted++
	sid := int64(f.granted)
	f.mu.Unlock()
	resp := binary.BigEndian.AppendUint32(nil, 0) // protocol version
	resp = append(resp, req[12:16]...)            // the timeout asked for
	resp = binary.BigEndian.AppendUint64(resp, uint64(sid))
	resp = appendJuteBuf(resp, make([]byte, 16))
	if _, err := c.Write(appendJuteBuf(nil, resp)); err != nil {
		return
	}
	stat := make([]byte, 68)
	for {
		req, err := readFrame(c)
		if err != nil || len(req) < 8 {
			return
		}
		xid, op := int32(binary.BigEndian.Uint32(req)), int32(binary.BigEndian.Uint32(req[4:]))
		body, code := f.handle(op, req[8:])
		f.mu.Lock()
		f.zxid++
		zxid := f.zxid
		f.mu.Unlock()
		out := binary.BigEndian.AppendUint32(nil, uint32(xid))
		out = binary.BigEndian.AppendUint64(out, uint64(zxid))
		out = binary.BigEndian.AppendUint32(out, uint32(code))
		if code == 0 {
			out = append(out, body...)
			if op == 3 || op == 4 || op == 5 || op == 12 {
				out = append(out, stat...)
			}
		}
		if _, err := c.Write(appendJuteBuf(nil, out)); err != nil || op == -11 {
			return
		}
	}
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i == 0 {
		return "/"
	}
	return p[:i]
}

// handle applies one request and returns the response body (without the
// Stat, which serve appends) and the error code.
func (f *fakeKeeper) handle(op int32, b []byte) ([]byte, int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[op]++
	if op == f.failOp && f.failEvery > 0 && f.counts[op]%f.failEvery == 0 {
		return nil, zkErrBadArguments
	}
	if op == 11 || op == -11 { // ping, close
		return nil, 0
	}
	pb, rest, err := juteBuf(b)
	if err != nil {
		return nil, zkErrBadArguments
	}
	p := string(pb)
	data, have := f.nodes[p]
	switch op {
	case 1: // create
		d, _, err := juteBuf(rest)
		switch {
		case err != nil:
			return nil, zkErrBadArguments
		case have:
			return nil, zkErrNodeExists
		}
		if _, ok := f.nodes[parentOf(p)]; !ok {
			return nil, zkErrNoNode
		}
		f.nodes[p] = slices.Clone(d)
		if f.record {
			f.log = append(f.log, p)
		}
		return appendJuteBuf(nil, pb), 0
	case 2: // delete
		if !have {
			return nil, zkErrNoNode
		}
		for q := range f.nodes {
			if q != "/" && parentOf(q) == p {
				return nil, zkErrNotEmpty
			}
		}
		delete(f.nodes, p)
		return nil, 0
	case 3, 4: // exists, getData
		if !have {
			return nil, zkErrNoNode
		}
		if op == 3 {
			return nil, 0
		}
		return appendJuteBuf(nil, data), 0
	case 5: // setData
		d, _, err := juteBuf(rest)
		if err != nil {
			return nil, zkErrBadArguments
		}
		if !have {
			return nil, zkErrNoNode
		}
		f.nodes[p] = slices.Clone(d)
		return nil, 0
	case 12: // getChildren2
		if !have {
			return nil, zkErrNoNode
		}
		var kids []string
		for q := range f.nodes {
			if q != "/" && parentOf(q) == p {
				kids = append(kids, q[strings.LastIndexByte(q, '/')+1:])
			}
		}
		out := binary.BigEndian.AppendUint32(nil, uint32(len(kids)))
		for _, k := range kids {
			out = appendJuteBuf(out, []byte(k))
		}
		return out, 0
	}
	return nil, zkErrUnimpl
}

// Without the create phase, set, get and delete work on znodes created
// unmeasured beforehand: --keys of them, or a fixed number per session.
func TestKeeperPreload(t *testing.T) {
	f := startFakeKeeper(t, nil)
	for _, c := range []struct {
		keys string
		want int64
	}{{"20", 20}, {"0", 2 * keeperPreloadPerSession}} {
		lines, stderr, code := runKeeperJSON(t, "--servers", f.addr(), "--clients", "2", "--outstanding", "4", "--keys", c.keys,
			"--ops", "delete,get", "--duration", "1s", "--warmup", "0s")
		if code != 0 || len(lines) != 2 || lines[0].Phase != "get" || lines[0].Ops == 0 || lines[1].Phase != "delete" || lines[1].Ops != c.want {
			t.Errorf("--keys %s: exit %d, want get then %d deletes: %v\n%s", c.keys, code, c.want, lines, stderr)
		}
	}
}

// --cpuprofile profiles the load generator; a path that cannot be created
// fails the run before it connects.
func TestKeeperCPUProfile(t *testing.T) {
	f := startFakeKeeper(t, nil)
	prof := filepath.Join(t.TempDir(), "bench.prof")
	args := []string{"--servers", f.addr(), "--clients", "2", "--keys", "4", "--ops", "create", "--warmup", "0s", "--root", "/p"}
	if _, stderr, code := runKeeperJSON(t, append(args, "--cpuprofile", prof)...); code != 0 {
		t.Fatalf("exit %d\n%s", code, stderr)
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Errorf("profile: %v (%v)", st, err)
	}
	bad := filepath.Join(t.TempDir(), "missing", "bench.prof")
	if _, stderr, code := runKeeperJSON(t, append(args, "--cpuprofile", bad)...); code != 1 || !strings.Contains(stderr, "--cpuprofile") {
		t.Errorf("unwritable profile: exit %d\n%s", code, stderr)
	}
}

// --timeline writes every measured phase's completions in 100 ms windows:
// the header, then per phase consecutive windows from 0 whose counts add up
// to the phase's ops, with p50 <= p99 <= max in each window that has any.
func TestKeeperTimeline(t *testing.T) {
	f := startFakeKeeper(t, nil)
	tl := filepath.Join(t.TempDir(), "tl.csv")
	lines, stderr, code := runKeeperJSON(t, "--servers", f.addr(), "--clients", "2", "--outstanding", "2", "--keys", "30",
		"--ops", "create,get", "--duration", "350ms", "--warmup", "50ms", "--root", "/t", "--timeline", tl)
	if code != 0 || len(lines) != 2 {
		t.Fatalf("exit %d %v\n%s", code, lines, stderr)
	}
	raw, err := os.ReadFile(tl)
	if err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if rows[0] != "phase,ms,unix_ms,ops,p50_us,p99_us,max_us" {
		t.Fatalf("header %q", rows[0])
	}
	ops := map[string]int64{}
	next := map[string]int64{}
	began := map[string]int64{}
	for _, row := range rows[1:] {
		var phase string
		var ms, unix, n, p50, p99, mx int64
		if _, err := fmt.Sscanf(strings.ReplaceAll(row, ",", " "), "%s %d %d %d %d %d %d", &phase, &ms, &unix, &n, &p50, &p99, &mx); err != nil {
			t.Fatalf("row %q: %v", row, err)
		}
		if ms != next[phase] {
			t.Errorf("%s: window at %d ms, want %d", phase, ms, next[phase])
		}
		if ms == 0 {
			began[phase] = unix
		} else if unix-began[phase] != ms {
			t.Errorf("%s: window %d ms into the phase at Unix ms %d, %d after its first", phase, ms, unix, unix-began[phase])
		}
		if d := time.Since(time.UnixMilli(unix)); d < 0 || d > time.Minute {
			t.Errorf("%s: window at Unix ms %d, %v ago", phase, unix, d)
		}
		next[phase] = ms + 100
		ops[phase] += n
		if n > 0 && (p50 > p99 || p99 > mx) || n == 0 && mx != 0 {
			t.Errorf("implausible row %q", row)
		}
	}
	if len(ops) != 2 || ops["create"] != lines[0].Ops || ops["get"] != lines[1].Ops {
		t.Errorf("timeline counts %v, want create %d and get %d (and no warmup or cleanup)", ops, lines[0].Ops, lines[1].Ops)
	}
	if next["get"] < 300 {
		t.Errorf("the 350 ms get phase ends at window %d ms", next["get"]-100)
	}
	bad := filepath.Join(t.TempDir(), "missing", "tl.csv")
	if _, stderr, code := runKeeperJSON(t, "--servers", f.addr(), "--timeline", bad); code != 1 || !strings.Contains(stderr, "--timeline") {
		t.Errorf("unwritable timeline: exit %d\n%s", code, stderr)
	}
}

// gatedConn is a net.Conn whose writes wait for release (one token each)
// and are recorded; Close unblocks a waiting write with an error.
type gatedConn struct {
	net.Conn // nil: only the methods below are used
	release  chan struct{}
	closed   chan struct{}
	once     sync.Once
	failWith error
	mu       sync.Mutex
	writes   [][]byte
}

func newGatedConn() *gatedConn {
	return &gatedConn{release: make(chan struct{}, 1000), closed: make(chan struct{})}
}

func (g *gatedConn) Write(p []byte) (int, error) {
	select {
	case <-g.release:
	case <-g.closed:
		return 0, net.ErrClosed
	}
	if g.failWith != nil {
		return 0, g.failWith
	}
	g.mu.Lock()
	g.writes = append(g.writes, bytes.Clone(p))
	g.mu.Unlock()
	return len(p), nil
}

func (g *gatedConn) Close() error {
	g.once.Do(func() { close(g.closed) })
	return nil
}

func (g *gatedConn) recorded() [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.writes)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// Requests written while a write is in the kernel leave together, in order.
func TestCoalescingConnBatches(t *testing.T) {
	g := newGatedConn()
	c := newCoalescingConn(g)
	defer c.Close()
	var want []byte
	buf := make([]byte, 8)
	for i := range 100 {
		binary.BigEndian.PutUint64(buf, uint64(i))
		if n, err := c.Write(buf); n != 8 || err != nil {
			t.Fatalf("Write %d: %d, %v", i, n, err)
		}
		want = append(want, buf...) // Write must have copied buf
		if i == 0 {
			// The writer has taken the first request and waits in Write.
			waitFor(t, "the writer to take the first request", func() bool {
				c.mu.Lock()
				defer c.mu.Unlock()
				return len(c.pending) == 0
			})
		}
	}
	g.release <- struct{}{}
	g.release <- struct{}{}
	waitFor(t, "two writes", func() bool { return len(g.recorded()) == 2 })
	w := g.recorded()
	if len(w[0]) != 8 || len(w[1]) != 99*8 {
		t.Errorf("writes of %d and %d bytes, want 8 and %d", len(w[0]), len(w[1]), 99*8)
	}
	if got := bytes.Join(w, nil); !bytes.Equal(got, want) {
		t.Errorf("bytes out of order or lost")
	}
	// An idle writer is woken by the next request.
	g.release <- struct{}{}
	c.Write([]byte("x"))
	waitFor(t, "a third write", func() bool { return len(g.recorded()) == 3 })
}

// Pending bytes are bounded: a Write that would pass coalesceLimit waits
// until the writer has taken what is pending.
func TestCoalescingConnBackpressure(t *testing.T) {
	g := newGatedConn()
	c := newCoalescingConn(g)
	defer c.Close()
	c.Write(make([]byte, 10))
	waitFor(t, "the writer to take the first request", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.pending) == 0
	})
	c.Write(make([]byte, coalesceLimit-10))
	returned := make(chan struct{})
	go func() {
		c.Write(make([]byte, 20))
		close(returned)
	}()
	select {
	case <-returned:
		t.Fatalf("a Write past the limit returned while %d bytes were pending", coalesceLimit-10)
	case <-time.After(50 * time.Millisecond):
	}
	g.release <- struct{}{} // the first write completes; the writer takes the big one
	<-returned
	g.release <- struct{}{}
	g.release <- struct{}{}
	waitFor(t, "three writes", func() bool { return len(g.recorded()) == 3 })
}

// A failed write closes the connection (so go-zookeeper's reader sees it)
// and fails every later Write; Close ends the writer even mid-write.
func TestCoalescingConnErrors(t *testing.T) {
	g := newGatedConn()
	g.failWith = errors.New("broken pipe")
	c := newCoalescingConn(g)
	c.Write([]byte("a"))
	g.release <- struct{}{}
	waitFor(t, "the connection to close", func() bool {
		select {
		case <-g.closed:
			return true
		default:
			return false
		}
	})
	waitFor(t, "Write to fail", func() bool {
		_, err := c.Write([]byte("b"))
		return err != nil && err.Error() == "broken pipe"
	})
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := c.Write([]byte("c")); err == nil {
		t.Errorf("Write after Close succeeded")
	}

	g2 := newGatedConn()
	c2 := newCoalescingConn(g2)
	c2.Write([]byte("stuck"))
	waitFor(t, "the writer to take the request", func() bool {
		c2.mu.Lock()
		defer c2.mu.Unlock()
		return len(c2.pending) == 0
	})
	c2.Close() // returns only once the writer has exited (goleak checks the rest)
	if _, err := c2.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
}

// TestKeeperWorkerPath checks the hand-built znode path against the format
// it replaces, for indices shorter than, as long as and longer than its ten
// digits, and that reusing the scratch buffer does not leak digits between
// calls.
func TestKeeperWorkerPath(t *testing.T) {
	w := &keeperWorker{s: &keeperSession{dir: "/herd-bench/s0007"}}
	for _, i := range []int64{0, 7, 42, 999999999, 1000000000, 9999999999, 12345678901, 3} {
		if got, want := w.path(i), fmt.Sprintf("%s/n%010d", w.s.dir, i); got != want {
			t.Errorf("path(%d) = %q, want %q", i, got, want)
		}
	}
}
