package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-zookeeper/zk"
)

// herd bench keeper drives any ZooKeeper endpoint (Apache ZooKeeper or herd)
// with the same client-side workload, so the two can be compared on one
// machine. It uses the go-zookeeper client rather than herd's own code, so
// both servers are measured through exactly the same client.
//
// Layout, fixed so that two runs against different servers do the same work:
// session i connects to servers[i % len(servers)] only and owns the directory
// <root>/s<i, 4 digits>; its K workers (--outstanding) create
// <root>/s<i>/n<j, 10 digits>, worker w taking j = w, w+K, w+2K, ... The
// names look like ZooKeeper sequential names, but the client numbers them
// itself, so every run names the same znodes.

const (
	// keeperMaxErrFraction is the share of failed requests a phase may have
	// before the run stops: a benchmark whose requests fail measures the
	// failure path, not the server.
	keeperMaxErrFraction = 0.01
	// keeperMinErrsToAbort keeps a phase running through a few early errors
	// (the fraction is meaningless over the first handful of requests); the
	// fraction is checked again over the whole phase at its end.
	keeperMinErrsToAbort = 10
	// keeperMaxSize: ZooKeeper's default jute.maxbuffer is 1 MiB per packet,
	// path and headers included.
	keeperMaxSize = 1_000_000
	// keeperPreloadPerSession is how many znodes each session creates,
	// unmeasured, when the create phase is not selected but set, get or
	// delete need something to work on and --keys is 0.
	keeperPreloadPerSession = 1000
	// keeperProgressEvery paces the progress lines of unbounded phases
	// (--populate, preload, cleanup), which may run for minutes.
	keeperProgressEvery = 10 * time.Second
)

var keeperPhases = []string{"create", "set", "get", "delete"}

type keeperConfig struct {
	servers        []string
	clients        int
	outstanding    int
	duration       time.Duration
	warmup         time.Duration
	size           int
	ops            []string // subset of keeperPhases, in keeperPhases order
	keys           int64
	root           string
	populate       int64
	json           bool
	keep           bool
	clean          bool
	connectTimeout time.Duration
	sessionTimeout time.Duration
	readBuffer     int
	coalesce       bool // --coalesce-writes
	verbose        bool
	cpuProfile     string // --cpuprofile: the load generator's own CPU profile
	procs          int    // --procs: GOMAXPROCS for the load generator (0: Go's default)
	timeline       string // --timeline: per-window latencies of every measured phase, as CSV
}

func (c *keeperConfig) has(op string) bool {
	for _, o := range c.ops {
		if o == op {
			return true
		}
	}
	return false
}

// parseKeeperFlags parses and validates the command line. Any error means a
// bad invocation (exit 2); flag.ErrHelp means --help was asked for.
func parseKeeperFlags(args []string, stderr io.Writer) (*keeperConfig, error) {
	fs := flag.NewFlagSet("herd bench keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: herd bench keeper --servers host:port[,host:port...] [flags]")
		fmt.Fprintln(stderr, "\nMeasures a ZooKeeper ensemble (Apache ZooKeeper or herd) through the go-zookeeper client:")
		fmt.Fprintln(stderr, "phases create, set, get, delete, or --populate N to load N znodes. Flags:")
		fs.PrintDefaults()
	}
	servers := fs.String("servers", "", "comma-separated host:port client addresses; session i connects to server i mod count only")
	clients := fs.Int("clients", 32, "sessions, spread round-robin over --servers")
	outstanding := fs.Int("outstanding", 1, "requests in flight per session (1: closed loop; K>1: K workers pipeline on the session)")
	duration := fs.Duration("duration", 10*time.Second, "length of each phase (create and delete also end when their work is done)")
	warmup := fs.Duration("warmup", time.Second, "unmeasured create/set/get/delete cycling on scratch znodes before measuring (0: none)")
	size := fs.Int("size", 100, "bytes of (random) data per znode")
	opsFlag := fs.String("ops", strings.Join(keeperPhases, ","), "phases to run, always in the order create,set,get,delete (\"none\": only connect, --clean and clean up)")
	keys := fs.Int64("keys", 0, fmt.Sprintf("znodes the create phase makes in all (0: as many as --duration allows; without create: %d per session, created unmeasured)", keeperPreloadPerSession))
	root := fs.String("root", "/herd-bench", "znode under which everything is created; must not exist unless --clean")
	populate := fs.Int64("populate", 0, "instead of the phases, create this many znodes as fast as possible and report the time")
	jsonOut := fs.Bool("json", false, "print one JSON object per phase instead of the table")
	keep := fs.Bool("keep", false, "leave --root and its znodes in place at the end (e.g. to measure server memory after --populate)")
	clean := fs.Bool("clean", false, "delete an existing --root (left by --keep or an interrupted run) before starting")
	connectTimeout := fs.Duration("connect-timeout", 10*time.Second, "give up if a session cannot be established within this time")
	sessionTimeout := fs.Duration("session-timeout", 30*time.Second, "ZooKeeper session timeout asked for (the client drops a connection silent for 2/3 of it)")
	verbose := fs.Bool("v", false, "log the go-zookeeper client's messages to stderr")
	procs := fs.Int("procs", 0, "GOMAXPROCS of this load generator (0: Go's default, every CPU); on a machine it shares with the servers, 1 keeps it from competing with them for more than a core")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of this load generator (not the servers) to this file")
	readBuffer := fs.Int("read-buffer", 64<<10, "bytes of replies each session reads from its socket at once (0: as go-zookeeper does, a read for each reply's length and another for its body)")
	timeline := fs.String("timeline", "", "write each measured phase's requests per 100 ms window (start, completions, p50, p99, max) to this CSV file, to see when a tail happens")
	coalesce := fs.Bool("coalesce-writes", true, "a session's requests that are ready while its previous write is in the kernel go out in one write (false: a write for each request, as go-zookeeper does)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	opsSet := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "ops" {
			opsSet = true
		}
	})
	c := &keeperConfig{
		clients: *clients, outstanding: *outstanding, duration: *duration, warmup: *warmup,
		size: *size, keys: *keys, root: *root, populate: *populate, json: *jsonOut,
		keep: *keep, clean: *clean, connectTimeout: *connectTimeout, sessionTimeout: *sessionTimeout,
		verbose: *verbose, readBuffer: *readBuffer, coalesce: *coalesce, cpuProfile: *cpuProfile,
		procs: *procs, timeline: *timeline,
	}
	var err error
	if c.servers, err = parseKeeperServers(*servers); err != nil {
		return nil, err
	}
	switch {
	case c.clients < 1:
		return nil, fmt.Errorf("--clients %d: want at least 1", c.clients)
	case c.outstanding < 1:
		return nil, fmt.Errorf("--outstanding %d: want at least 1", c.outstanding)
	case c.clients > 100_000 || c.clients*c.outstanding > 1_000_000:
		return nil, fmt.Errorf("--clients %d x --outstanding %d: too many", c.clients, c.outstanding)
	case c.duration <= 0:
		return nil, fmt.Errorf("--duration %v: want more than 0", c.duration)
	case c.procs < 0:
		return nil, fmt.Errorf("--procs %d: want 0 or more", c.procs)
	case c.warmup < 0:
		return nil, fmt.Errorf("--warmup %v: want 0 or more", c.warmup)
	case c.size < 0 || c.size > keeperMaxSize:
		return nil, fmt.Errorf("--size %d: want 0..%d (ZooKeeper's default jute.maxbuffer is 1 MiB)", c.size, keeperMaxSize)
	case c.keys < 0:
		return nil, fmt.Errorf("--keys %d: want 0 or more", c.keys)
	case c.populate < 0:
		return nil, fmt.Errorf("--populate %d: want 0 or more", c.populate)
	case c.populate > 0 && opsSet:
		return nil, errors.New("--populate replaces the phases; drop --ops")
	case c.populate > 0 && c.keys > 0:
		return nil, errors.New("--populate sets the number of znodes; drop --keys")
	case c.readBuffer < 0 || c.readBuffer > 64<<20:
		return nil, fmt.Errorf("--read-buffer %d: want 0..%d", c.readBuffer, 64<<20)
	case c.connectTimeout <= 0:
		return nil, fmt.Errorf("--connect-timeout %v: want more than 0", c.connectTimeout)
	case c.sessionTimeout < time.Second:
		return nil, fmt.Errorf("--session-timeout %v: want at least 1s", c.sessionTimeout)
	}
	if err := validateKeeperRoot(c.root); err != nil {
		return nil, err
	}
	if c.ops, err = parseKeeperOps(*opsFlag); err != nil {
		return nil, err
	}
	return c, nil
}

// parseKeeperServers parses --servers; as in ZooKeeper connect strings the
// port defaults to 2181.
func parseKeeperServers(s string) ([]string, error) {
	return parseHostPorts("--servers", s, "2181", "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183")
}

// parseHostPorts parses a comma-separated host[:port] list for a bench flag.
func parseHostPorts(flagName, s, defaultPort, example string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%s is required (e.g. %s %s)", flagName, flagName, example)
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		host, port, err := net.SplitHostPort(f)
		if err != nil && strings.Contains(err.Error(), "missing port") {
			host, port, err = f, defaultPort, nil
			f = net.JoinHostPort(f, port)
		}
		if err != nil || host == "" {
			return nil, fmt.Errorf("%s: bad address %q (want host:port)", flagName, f)
		}
		if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: bad port in %q", flagName, f)
		}
		out = append(out, f)
	}
	return out, nil
}

func parseKeeperOps(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "none" {
		return nil, nil
	}
	want := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		ok := false
		for _, p := range keeperPhases {
			ok = ok || f == p
		}
		if !ok {
			return nil, fmt.Errorf("--ops: unknown phase %q (want a list of %s, or none)", f, strings.Join(keeperPhases, ","))
		}
		want[f] = true
	}
	var ops []string
	for _, p := range keeperPhases {
		if want[p] {
			ops = append(ops, p)
		}
	}
	return ops, nil
}

func validateKeeperRoot(root string) error {
	if !strings.HasPrefix(root, "/") || root == "/" || strings.HasSuffix(root, "/") {
		return fmt.Errorf("--root %q: want an absolute znode path other than /", root)
	}
	for _, c := range strings.Split(root[1:], "/") {
		if c == "" || c == "." || c == ".." || strings.ContainsRune(c, 0) {
			return fmt.Errorf("--root %q: bad path component %q", root, c)
		}
	}
	if root == "/zookeeper" || strings.HasPrefix(root, "/zookeeper/") {
		return fmt.Errorf("--root %q: /zookeeper belongs to the server", root)
	}
	return nil
}

// benchKeeper is `herd bench keeper`: exit 0 on success, 1 if the servers
// cannot be reached or requests fail, 2 on a bad command line.
func benchKeeper(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseKeeperFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "herd bench keeper:", err)
		return 2
	}
	// The first Ctrl-C ends the current phase and still cleans up; stopping
	// the notification right away lets a second one kill the process.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	if cfg.procs > 0 {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(cfg.procs))
	}
	if cfg.cpuProfile != "" {
		stopProfile, err := startCPUProfile(cfg.cpuProfile)
		if err != nil {
			fmt.Fprintln(stderr, "herd bench keeper: --cpuprofile:", err)
			return 1
		}
		defer stopProfile()
	}
	b := &keeperBench{cfg: cfg, stdout: stdout, stderr: &lockedWriter{w: stderr}, acl: zk.WorldACL(zk.PermAll)}
	if cfg.timeline != "" {
		f, err := os.Create(cfg.timeline)
		if err != nil {
			fmt.Fprintln(stderr, "herd bench keeper: --timeline:", err)
			return 1
		}
		w := bufio.NewWriter(f)
		fmt.Fprintln(w, "phase,ms,unix_ms,ops,p50_us,p99_us,max_us")
		b.timeline = w
		defer func() {
			if err := errors.Join(w.Flush(), f.Close()); err != nil {
				fmt.Fprintln(stderr, "herd bench keeper: --timeline:", err)
			}
		}()
	}
	err = b.connect(ctx)
	defer b.closeSessions()
	if err != nil {
		fmt.Fprintln(b.stderr, "herd bench keeper:", err)
		return 1
	}
	return b.run(ctx)
}

type keeperBench struct {
	cfg      *keeperConfig
	timeline *bufio.Writer // --timeline, or nil
	stdout   io.Writer
	stderr   io.Writer
	acl      []zk.ACL
	sessions []*keeperSession
	workers  []*keeperWorker // session i's workers are [i*K, (i+1)*K)
	// madeParents are the ancestors of --root this run created, deepest
	// last, so cleanup can remove them too.
	madeParents []string
}

type keeperSession struct {
	idx    int
	server string
	dir    string
	conn   *zk.Conn
	events <-chan zk.Event
	dialer *trackingDialer
	log    *zkLogger
}

type keeperWorker struct {
	s        *keeperSession
	w        int
	stride   int64  // workers per session: the step between this worker's indices
	data     []byte // create payload
	setData  []byte // set payload, different so that a set changes the value
	next     int64  // next index to create
	quota    int64  // the session's share of znodes: indices below it
	nodes    []int64
	pos      int // set/get: next position in nodes; delete: nodes before it are gone
	hist     latHist
	done     []timedLatency // --timeline: this phase's completions
	warmStep int
	pathBuf  []byte // path's scratch: the session's directory and "/n", then digits
}

// path is the znode of index i: fmt's "%s/n%010d" of the session's
// directory and i (i >= 0), without fmt, which was a twentieth of the load
// generator's CPU at a hundred thousand requests a second.
func (w *keeperWorker) path(i int64) string {
	if len(w.pathBuf) == 0 {
		w.pathBuf = append(append(w.pathBuf, w.s.dir...), "/n"...)
	}
	prefix := len(w.s.dir) + 2
	var d [20]byte
	digits := strconv.AppendInt(d[:0], i, 10)
	b := w.pathBuf[:prefix]
	for n := len(digits); n < 10; n++ {
		b = append(b, '0')
	}
	b = append(b, digits...)
	w.pathBuf = b
	return string(b)
}

// lockedWriter serialises writes to stderr: progress lines and client logs
// come from several goroutines, and stderr may be a bytes.Buffer in tests.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// zkLogger receives the go-zookeeper client's log lines. It keeps the last
// one, which explains a failed connect ("authentication failed: EOF" when a
// server closes new connections), and prints them only with -v.
type zkLogger struct {
	prefix string
	out    io.Writer // nil: quiet
	mu     sync.Mutex
	last   string
}

func (l *zkLogger) Printf(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	l.mu.Lock()
	l.last = msg
	l.mu.Unlock()
	if l.out != nil {
		fmt.Fprintf(l.out, "%s: %s\n", l.prefix, msg)
	}
}

func (l *zkLogger) lastLine() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// trackingDialer remembers the session's TCP connection and the last dial
// error. go-zookeeper waits up to ten times the receive timeout for a
// connect response and has no way to cancel that, so closing the socket
// ourselves is what bounds the time spent on a server that accepts but never
// answers.
type trackingDialer struct {
	readBuffer int  // --read-buffer
	coalesce   bool // --coalesce-writes
	mu         sync.Mutex
	conn       net.Conn
	lastErr    error
	closed     bool
}

// bufferedConn reads through a buffer. go-zookeeper reads each reply's
// 4-byte length and then its body straight from the socket: two syscalls
// per reply, which with many replies in flight made the load generator,
// sharing the machine's cores with the servers, a large part of what was
// measured, for ZooKeeper and herd alike. Through a buffer one read takes
// every reply that has arrived.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (d *trackingDialer) dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, timeout)
	d.mu.Lock()
	defer d.mu.Unlock()
	if err != nil {
		d.lastErr = err
		return nil, err
	}
	if d.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if d.coalesce {
		c = newCoalescingConn(c)
	}
	// forceClose closes this conn: with coalescing, the wrapper (whose Close
	// also ends its writer goroutine), not only the socket under it.
	d.conn = c
	if d.readBuffer > 0 {
		return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, d.readBuffer)}, nil
	}
	return c, nil
}

// coalescingConn writes from a goroutine of its own: Write copies the
// request into a pending buffer and returns, and the writer sends all that
// is pending in one write. go-zookeeper's send loop writes each request with
// a syscall of its own, so with K requests in flight a session made K
// writes, and the server K reads, where one would do; on this machine's
// virtual CPUs a loopback write costs the sender the receiver's wakeup too.
// The requests still leave in the order go-zookeeper wrote them. With one
// request in flight per session there is nothing to coalesce, and each
// write costs a goroutine handoff instead of go-zookeeper's two write
// deadline changes (DESIGN §11 has the figures both ways).
type coalescingConn struct {
	net.Conn
	mu      sync.Mutex
	cond    sync.Cond // signalled when pending shrinks, on error and on close
	pending []byte
	writing bool  // the writer owns a batch or is about to take one
	err     error // the first write error, or net.ErrClosed
	wake    chan struct{}
	done    chan struct{} // closed by Close
	once    sync.Once
	exited  chan struct{}
}

// coalesceLimit bounds a session's pending bytes: Write waits beyond it.
const coalesceLimit = 1 << 20

func newCoalescingConn(c net.Conn) *coalescingConn {
	cc := &coalescingConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{}), exited: make(chan struct{})}
	cc.cond.L = &cc.mu
	go cc.writer()
	return cc
}

func (c *coalescingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	for c.err == nil && len(c.pending) > 0 && len(c.pending)+len(p) > coalesceLimit {
		c.cond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	c.pending = append(c.pending, p...)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// SetWriteDeadline is dropped: the writes happen later, on the writer. A
// server that stops reading is caught by go-zookeeper's read deadline, which
// closes the connection and so ends a blocked write.
func (c *coalescingConn) SetWriteDeadline(time.Time) error { return nil }

func (c *coalescingConn) SetDeadline(t time.Time) error { return c.Conn.SetReadDeadline(t) }

func (c *coalescingConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		err = c.Conn.Close()
		close(c.done)
		c.fail(net.ErrClosed)
		<-c.exited
	})
	return err
}

func (c *coalescingConn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
}

func (c *coalescingConn) writer() {
	defer close(c.exited)
	var spare []byte
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		// Let the goroutines that are ready run first: the replies of one
		// read each free a worker whose next request then joins this batch
		// (Gosched queues the writer behind them).
		runtime.Gosched()
		for {
			c.mu.Lock()
			if len(c.pending) == 0 || c.err != nil {
				c.writing = false
				c.mu.Unlock()
				break
			}
			batch := c.pending
			c.pending = spare[:0]
			c.cond.Broadcast()
			c.mu.Unlock()
			if _, err := c.Conn.Write(batch); err != nil {
				c.fail(err)
				c.Conn.Close() // the reader sees it and go-zookeeper reconnects
				break
			}
			spare = batch
		}
	}
}

func (d *trackingDialer) forceClose() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.conn != nil {
		d.conn.Close()
	}
}

func (d *trackingDialer) state() (dialed bool, lastErr error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.conn != nil, d.lastErr
}

// connect opens every session and waits until each has a ZooKeeper session,
// or gives up after --connect-timeout with one line naming the servers that
// failed.
func (b *keeperBench) connect(ctx context.Context) error {
	cfg := b.cfg
	b.sessions = make([]*keeperSession, cfg.clients)
	errs := make([]error, cfg.clients)
	deadline := time.Now().Add(cfg.connectTimeout)
	var wg sync.WaitGroup
	for i := range cfg.clients {
		s := &keeperSession{
			idx:    i,
			server: cfg.servers[i%len(cfg.servers)],
			dir:    fmt.Sprintf("%s/s%04d", cfg.root, i),
			dialer: &trackingDialer{readBuffer: cfg.readBuffer, coalesce: cfg.coalesce},
			log:    &zkLogger{prefix: fmt.Sprintf("zk s%04d", i)},
		}
		if cfg.verbose {
			s.log.out = b.stderr
		}
		b.sessions[i] = s
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.open(ctx, deadline, cfg.sessionTimeout)
		}()
	}
	wg.Wait()
	var msgs []string
	seen := map[string]bool{}
	for i, err := range errs {
		if err != nil && !seen[b.sessions[i].server] {
			seen[b.sessions[i].server] = true
			msgs = append(msgs, fmt.Sprintf("%s: %v", b.sessions[i].server, err))
		}
	}
	if len(msgs) > 0 {
		return fmt.Errorf("no ZooKeeper session within %v from %s", cfg.connectTimeout, strings.Join(msgs, "; "))
	}
	for _, s := range b.sessions {
		for w := range cfg.outstanding {
			// A fixed seed per (session, worker): the same bytes in every run.
			var seed [32]byte
			binary.LittleEndian.PutUint64(seed[:], uint64(s.idx))
			binary.LittleEndian.PutUint64(seed[8:], uint64(w))
			r := rand.NewChaCha8(seed)
			wk := &keeperWorker{s: s, w: w, stride: int64(cfg.outstanding),
				data: make([]byte, cfg.size), setData: make([]byte, cfg.size)}
			r.Read(wk.data)
			r.Read(wk.setData)
			b.workers = append(b.workers, wk)
		}
	}
	return nil
}

func (s *keeperSession) open(ctx context.Context, deadline time.Time, sessionTimeout time.Duration) error {
	conn, events, err := zk.Connect([]string{s.server}, sessionTimeout,
		zk.WithDialer(s.dialer.dial), zk.WithLogger(s.log), zk.WithLogInfo(false))
	if err != nil {
		return err // e.g. the host name does not resolve
	}
	s.conn, s.events = conn, events
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	// Poll as well as watch events: go-zookeeper drops events when its small
	// channel is full, the state is authoritative.
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for conn.State() != zk.StateHasSession {
		select {
		case _, ok := <-events:
			if !ok {
				return errors.New("client closed")
			}
		case <-poll.C:
		case <-ctx.Done():
			return errors.New("interrupted")
		case <-timer.C:
			if dialed, dialErr := s.dialer.state(); !dialed && dialErr != nil {
				return dialErr
			}
			why := "connected, but the server did not grant a session (not serving: no quorum? too many connections from this IP: maxClientCnxns?)"
			if l := s.log.lastLine(); l != "" {
				why += "; client: " + l
			}
			return errors.New(why)
		}
	}
	return nil
}

// closeSessions ends every session (a closeSession request, so the servers
// forget them at once) and waits, boundedly, until go-zookeeper's goroutines
// are gone.
func (b *keeperBench) closeSessions() {
	var wg sync.WaitGroup
	for _, s := range b.sessions {
		if s == nil || s.conn == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.conn.Close() // waits at most ~1s for the server's reply
			s.dialer.forceClose()
			t := time.NewTimer(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case _, ok := <-s.events:
					if !ok {
						return // the client's loop has exited
					}
				case <-t.C:
					return
				}
			}
		}()
	}
	wg.Wait()
}

// phaseResult is one phase's measurement.
type phaseResult struct {
	name     string
	ops      int64 // successful requests
	errs     int64 // failed requests
	elapsed  time.Duration
	hist     latHist
	firstErr error
	aborted  bool // too many errors
	stopped  bool // interrupted
}

func (r *phaseResult) failed() bool {
	return r.aborted || float64(r.errs) > keeperMaxErrFraction*float64(r.ops+r.errs)
}

func (r *phaseResult) failure() string {
	return fmt.Sprintf("%s: %d of %d requests failed (more than %g%%); first: %v",
		r.name, r.errs, r.ops+r.errs, keeperMaxErrFraction*100, r.firstErr)
}

// stepFunc issues one request for a worker. ran=false means the worker has
// nothing (more) to do in this phase; lat is the request's latency alone,
// without the bookkeeping around it.
type stepFunc func(w *keeperWorker) (ran bool, lat time.Duration, err error)

// runPhase runs step on every worker until d has passed (d <= 0: no time
// limit), every worker is done, ctx ends or too many requests fail.
func (b *keeperBench) runPhase(ctx context.Context, name string, d time.Duration, step stepFunc) *phaseResult {
	var ops, errs atomic.Int64
	var abort atomic.Bool
	var errMu sync.Mutex
	var firstErr error
	start := time.Now()
	// over ends a timed phase: a flag the workers load, rather than a clock
	// read per request each.
	var over atomic.Bool
	if d > 0 {
		t := time.AfterFunc(d, func() { over.Store(true) })
		defer t.Stop()
	}
	var wg sync.WaitGroup
	for _, wk := range b.workers {
		wk.hist = latHist{}
		wk.done = wk.done[:0]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !abort.Load() && !over.Load() && ctx.Err() == nil {
				ran, lat, err := step(wk)
				if !ran {
					return
				}
				if err != nil {
					errMu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					errMu.Unlock()
					if e := errs.Add(1); e >= keeperMinErrsToAbort && float64(e) > keeperMaxErrFraction*float64(e+ops.Load()) {
						abort.Store(true)
					}
					continue
				}
				ops.Add(1)
				wk.hist.record(lat)
				if b.timeline != nil {
					wk.done = append(wk.done, timedLatency{at: time.Since(start), lat: lat})
				}
			}
		}()
	}
	done := make(chan struct{})
	var progress sync.WaitGroup
	if d <= 0 {
		progress.Add(1)
		go func() {
			defer progress.Done()
			t := time.NewTicker(keeperProgressEvery)
			defer t.Stop()
			for {
				select {
				case <-done:
					return
				case <-t.C:
					n := ops.Load()
					fmt.Fprintf(b.stderr, "%s: %d done, %.0f/s so far\n", name, n, float64(n)/time.Since(start).Seconds())
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	progress.Wait()
	r := &phaseResult{name: name, ops: ops.Load(), errs: errs.Load(), elapsed: time.Since(start),
		firstErr: firstErr, aborted: abort.Load(), stopped: ctx.Err() != nil}
	for _, wk := range b.workers {
		r.hist.merge(&wk.hist)
	}
	if b.timeline != nil && (name == "populate" || slices.Contains(keeperPhases, name)) {
		b.writeTimeline(name, start) // the phases reported, not warmup, preload or cleanup
	}
	return r
}

// timedLatency is one completed request for --timeline: when it completed
// (since the phase began) and how long it took.
type timedLatency struct{ at, lat time.Duration }

// timelineWindow is the width of --timeline's windows.
const timelineWindow = 100 * time.Millisecond

// writeTimeline writes the phase's completions to --timeline, one CSV line
// per window: phase, window start (ms into the phase, and Unix ms, to line
// it up with the servers' logs), completions, p50, p99 and max latency
// (µs). A window with no completion is written too, as a stall is what
// this is for.
func (b *keeperBench) writeTimeline(phase string, start time.Time) {
	var windows []latHist
	for _, wk := range b.workers {
		for _, d := range wk.done {
			i := int(d.at / timelineWindow)
			for len(windows) <= i {
				windows = append(windows, latHist{})
			}
			windows[i].record(d.lat)
		}
	}
	us := func(d time.Duration) int64 { return d.Microseconds() }
	for i := range windows {
		h := &windows[i]
		at := time.Duration(i) * timelineWindow
		fmt.Fprintf(b.timeline, "%s,%d,%d,%d,%d,%d,%d\n", phase, at.Milliseconds(), start.Add(at).UnixMilli(),
			h.n, us(h.quantile(0.5)), us(h.quantile(0.99)), us(h.max))
	}
}

// setQuota shares total znodes (0: unlimited) among the sessions and resets
// the workers' create counters.
func (b *keeperBench) setQuota(total int64) {
	n := int64(len(b.sessions))
	for _, wk := range b.workers {
		q := int64(math.MaxInt64)
		if total > 0 {
			i := int64(wk.s.idx)
			q = total / n
			if i < total%n {
				q++
			}
		}
		wk.quota, wk.next = q, int64(wk.w)
	}
}

func (b *keeperBench) createStep(w *keeperWorker) (bool, time.Duration, error) {
	if w.next >= w.quota {
		return false, 0, nil
	}
	i := w.next
	w.next += w.stride
	p := w.path(i)
	t0 := time.Now()
	got, err := w.s.conn.Create(p, w.data, 0, b.acl)
	lat := time.Since(t0)
	if err == nil && got != p {
		err = fmt.Errorf("server created %s", got)
	}
	if err != nil {
		// The znode may or may not exist now; cleanup lists the tree, so
		// only nodes known to exist are used by the later phases.
		return true, lat, fmt.Errorf("create %s: %w", p, err)
	}
	w.nodes = append(w.nodes, i)
	return true, lat, nil
}

func (b *keeperBench) setStep(w *keeperWorker) (bool, time.Duration, error) {
	if len(w.nodes) == 0 {
		return false, 0, nil
	}
	p := w.path(w.nodes[w.pos%len(w.nodes)])
	w.pos++
	t0 := time.Now()
	_, err := w.s.conn.Set(p, w.setData, -1)
	lat := time.Since(t0)
	if err != nil {
		return true, lat, fmt.Errorf("set %s: %w", p, err)
	}
	return true, lat, nil
}

func (b *keeperBench) getStep(w *keeperWorker) (bool, time.Duration, error) {
	if len(w.nodes) == 0 {
		return false, 0, nil
	}
	p := w.path(w.nodes[w.pos%len(w.nodes)])
	w.pos++
	t0 := time.Now()
	data, _, err := w.s.conn.Get(p)
	lat := time.Since(t0)
	if err == nil && len(data) != b.cfg.size {
		// A cheap check that the server returns what was stored.
		err = fmt.Errorf("got %d bytes, want %d", len(data), b.cfg.size)
	}
	if err != nil {
		return true, lat, fmt.Errorf("get %s: %w", p, err)
	}
	return true, lat, nil
}

func (b *keeperBench) deleteStep(w *keeperWorker) (bool, time.Duration, error) {
	if w.pos >= len(w.nodes) {
		return false, 0, nil
	}
	p := w.path(w.nodes[w.pos])
	w.pos++ // on error too: retrying would only repeat it; cleanup removes leftovers
	t0 := time.Now()
	err := w.s.conn.Delete(p, -1)
	lat := time.Since(t0)
	if err != nil {
		return true, lat, fmt.Errorf("delete %s: %w", p, err)
	}
	return true, lat, nil
}

// warmStep cycles create, set, get, delete on one scratch znode per worker
// so that connections, server caches and a JVM's JIT are warm before the
// first measured phase; a cycle is always finished so nothing is left over.
func (b *keeperBench) warmStep(until time.Time) stepFunc {
	return func(w *keeperWorker) (bool, time.Duration, error) {
		if w.warmStep == 0 && !time.Now().Before(until) {
			return false, 0, nil
		}
		p := fmt.Sprintf("%s/warm%04d", w.s.dir, w.w)
		var err error
		switch w.warmStep {
		case 0:
			_, err = w.s.conn.Create(p, w.data, 0, b.acl)
		case 1:
			_, err = w.s.conn.Set(p, w.setData, -1)
		case 2:
			_, _, err = w.s.conn.Get(p)
		case 3:
			err = w.s.conn.Delete(p, -1)
		}
		w.warmStep = (w.warmStep + 1) % 4
		if err != nil {
			return true, 0, fmt.Errorf("warmup %s: %w", p, err)
		}
		return true, 0, nil
	}
}

func (b *keeperBench) run(ctx context.Context) int {
	cfg := b.cfg
	if err := b.prepareRoot(ctx); err != nil {
		fmt.Fprintln(b.stderr, "herd bench keeper:", err)
		return 1
	}
	code := b.measure(ctx)
	if cfg.keep {
		fmt.Fprintf(b.stderr, "herd bench keeper: kept %s (remove it with --clean --ops none)\n", cfg.root)
		return code
	}
	// Cleanup runs even after an interrupt or a failed phase, and is not
	// itself interruptible by the first Ctrl-C (a second one kills).
	start := time.Now()
	n, err := b.removeAll(context.Background(), cfg.root)
	for i := len(b.madeParents) - 1; i >= 0 && err == nil; i-- {
		if e := b.sessions[0].conn.Delete(b.madeParents[i], -1); e != nil && !errors.Is(e, zk.ErrNoNode) && !errors.Is(e, zk.ErrNotEmpty) {
			err = fmt.Errorf("delete %s: %w", b.madeParents[i], e)
		}
	}
	if err != nil {
		fmt.Fprintf(b.stderr, "herd bench keeper: cleanup of %s failed: %v (rerun with --clean --ops none)\n", cfg.root, err)
		return 1
	}
	if n > 1000 {
		fmt.Fprintf(b.stderr, "herd bench keeper: cleanup: deleted %d znodes in %v\n", n, time.Since(start).Round(time.Millisecond))
	}
	return code
}

// prepareRoot creates --root (and missing ancestors) and the sessions'
// directories. An existing root is refused unless --clean: its contents
// would change what is measured, and it may be someone else's data.
func (b *keeperBench) prepareRoot(ctx context.Context) error {
	cfg, conn := b.cfg, b.sessions[0].conn
	exists, _, err := conn.Exists(cfg.root)
	if err != nil {
		return fmt.Errorf("exists %s: %w", cfg.root, err)
	}
	if exists {
		if !cfg.clean {
			return fmt.Errorf("%s already exists (left by --keep or an interrupted run?); add --clean to delete it first, or use another --root", cfg.root)
		}
		start := time.Now()
		n, err := b.removeAll(ctx, cfg.root)
		if err != nil {
			return fmt.Errorf("--clean: %w", err)
		}
		fmt.Fprintf(b.stderr, "herd bench keeper: --clean: deleted %s (%d znodes) in %v\n", cfg.root, n, time.Since(start).Round(time.Millisecond))
	}
	parts := strings.Split(cfg.root[1:], "/")
	for i := range parts {
		p := "/" + strings.Join(parts[:i+1], "/")
		_, err := conn.Create(p, nil, 0, b.acl)
		switch {
		case err == nil && i < len(parts)-1:
			b.madeParents = append(b.madeParents, p)
		case err == nil, errors.Is(err, zk.ErrNodeExists) && i < len(parts)-1:
		default:
			return fmt.Errorf("create %s: %w", p, err)
		}
	}
	errs := make([]error, len(b.sessions))
	var wg sync.WaitGroup
	for i, s := range b.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.conn.Create(s.dir, nil, 0, b.acl); err != nil {
				errs[i] = fmt.Errorf("create %s: %w", s.dir, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// measure runs the warmup and the phases (or --populate) and reports each.
func (b *keeperBench) measure(ctx context.Context) int {
	cfg := b.cfg
	if cfg.populate == 0 && len(cfg.ops) == 0 {
		return 0
	}
	if !cfg.json {
		what := fmt.Sprintf("phases %s, %v each", strings.Join(cfg.ops, ","), cfg.duration)
		if cfg.populate > 0 {
			what = fmt.Sprintf("populate %d znodes", cfg.populate)
		}
		fmt.Fprintf(b.stdout, "herd bench keeper: %d servers (%s), %d sessions x %d outstanding, %d B values, %s, root %s\n",
			len(cfg.servers), strings.Join(cfg.servers, ","), cfg.clients, cfg.outstanding, cfg.size, what, cfg.root)
	}
	if cfg.warmup > 0 {
		r := b.runPhase(ctx, "warmup", 0, b.warmStep(time.Now().Add(cfg.warmup)))
		if code := b.check(r); code != 0 {
			return code
		}
	}
	if !cfg.json {
		fmt.Fprintf(b.stdout, "%-8s %10s %9s %10s %10s %10s %10s %7s\n", "phase", "ops", "time", "ops/s", "p50", "p99", "p999", "errors")
	}
	if cfg.populate > 0 {
		b.setQuota(cfg.populate)
		r := b.runPhase(ctx, "populate", 0, b.createStep)
		b.report(r)
		return b.check(r)
	}
	if !cfg.has("create") {
		keys := cfg.keys
		if keys == 0 {
			keys = int64(keeperPreloadPerSession * cfg.clients)
		}
		b.setQuota(keys)
		r := b.runPhase(ctx, "preload", 0, b.createStep)
		if code := b.check(r); code != 0 {
			return code
		}
	}
	steps := map[string]stepFunc{"create": b.createStep, "set": b.setStep, "get": b.getStep, "delete": b.deleteStep}
	for _, op := range cfg.ops {
		if op == "create" {
			b.setQuota(cfg.keys)
		}
		for _, wk := range b.workers {
			wk.pos = 0
		}
		r := b.runPhase(ctx, op, cfg.duration, steps[op])
		b.report(r)
		if code := b.check(r); code != 0 {
			return code
		}
		if op == "create" && cfg.keys > 0 && r.ops < cfg.keys {
			// Runs meant to do the same work no longer do: say so.
			fmt.Fprintf(b.stderr, "herd bench keeper: create: --duration ended after %d of --keys %d znodes; the later phases use those\n", r.ops, cfg.keys)
		}
	}
	return 0
}

// check turns a failed or interrupted phase into a message and exit code 1.
func (b *keeperBench) check(r *phaseResult) int {
	switch {
	case r.failed():
		fmt.Fprintln(b.stderr, "herd bench keeper:", r.failure())
		return 1
	case r.stopped:
		fmt.Fprintf(b.stderr, "herd bench keeper: interrupted during %s\n", r.name)
		return 1
	}
	return 0
}

// keeperReport is the --json line for one phase. Latencies are in
// microseconds; ops counts successful requests only.
type keeperReport struct {
	Phase       string   `json:"phase"`
	Servers     []string `json:"servers"`
	Clients     int      `json:"clients"`
	Outstanding int      `json:"outstanding"`
	Size        int      `json:"size"`
	Ops         int64    `json:"ops"`
	Errors      int64    `json:"errors"`
	Seconds     float64  `json:"seconds"`
	OpsPerSec   float64  `json:"ops_per_sec"`
	MeanUs      float64  `json:"mean_us"`
	P50Us       float64  `json:"p50_us"`
	P99Us       float64  `json:"p99_us"`
	P999Us      float64  `json:"p999_us"`
	MaxUs       float64  `json:"max_us"`
}

func (b *keeperBench) report(r *phaseResult) {
	rate := float64(r.ops) / max(r.elapsed.Seconds(), 1e-9)
	if b.cfg.json {
		us := func(d time.Duration) float64 { return math.Round(float64(d)/float64(time.Microsecond)*10) / 10 }
		line, _ := json.Marshal(keeperReport{
			Phase: r.name, Servers: b.cfg.servers, Clients: b.cfg.clients, Outstanding: b.cfg.outstanding,
			Size: b.cfg.size, Ops: r.ops, Errors: r.errs, Seconds: math.Round(r.elapsed.Seconds()*1000) / 1000,
			OpsPerSec: math.Round(rate*10) / 10, MeanUs: us(r.hist.mean()), P50Us: us(r.hist.quantile(0.5)),
			P99Us: us(r.hist.quantile(0.99)), P999Us: us(r.hist.quantile(0.999)), MaxUs: us(r.hist.max),
		})
		fmt.Fprintf(b.stdout, "%s\n", line)
		return
	}
	lat := func(q float64) string { return r.hist.quantile(q).Round(time.Microsecond).String() }
	fmt.Fprintf(b.stdout, "%-8s %10d %8.2fs %10.0f %10s %10s %10s %7d\n", r.name, r.ops,
		r.elapsed.Seconds(), rate, lat(0.5), lat(0.99), lat(0.999), r.errs)
}

// removeAll deletes path and everything below it and returns how many
// znodes went. It lists only path and its children, which is enough for
// this benchmark's two-level layout, and deletes the grandchildren with all
// workers in parallel; anything deeper is found through ErrNotEmpty and
// removed recursively.
func (b *keeperBench) removeAll(ctx context.Context, path string) (int64, error) {
	conn := b.sessions[0].conn
	kids, _, err := conn.Children(path)
	if errors.Is(err, zk.ErrNoNode) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", path, err)
	}
	dirs := make([]string, len(kids))
	leaves := make([][]string, len(kids))
	errs := make([]error, len(kids))
	var wg sync.WaitGroup
	for i, k := range kids {
		dirs[i] = path + "/" + k
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub, _, err := b.sessions[i%len(b.sessions)].conn.Children(dirs[i])
			if err != nil && !errors.Is(err, zk.ErrNoNode) {
				errs[i] = fmt.Errorf("list %s: %w", dirs[i], err)
			}
			for _, s := range sub {
				leaves[i] = append(leaves[i], dirs[i]+"/"+s)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	var all []string
	for _, l := range leaves {
		all = append(all, l...)
	}
	total := int64(0)
	for _, level := range [][]string{all, dirs, {path}} {
		n, err := b.deleteAll(ctx, level)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// deleteAll deletes paths with every worker, recursing into the ones that
// turn out to have children.
func (b *keeperBench) deleteAll(ctx context.Context, paths []string) (int64, error) {
	if len(paths) == 0 {
		return 0, nil
	}
	var next atomic.Int64
	var mu sync.Mutex
	var notEmpty []string
	r := b.runPhase(ctx, "cleanup", 0, func(w *keeperWorker) (bool, time.Duration, error) {
		i := next.Add(1) - 1
		if i >= int64(len(paths)) {
			return false, 0, nil
		}
		err := w.s.conn.Delete(paths[i], -1)
		switch {
		case errors.Is(err, zk.ErrNoNode):
			err = nil // a create that failed on our side may never have happened
		case errors.Is(err, zk.ErrNotEmpty):
			mu.Lock()
			notEmpty = append(notEmpty, paths[i])
			mu.Unlock()
			return true, 0, nil
		case err != nil:
			return true, 0, fmt.Errorf("delete %s: %w", paths[i], err)
		}
		return true, 0, nil
	})
	n := r.ops - int64(len(notEmpty))
	if r.errs > 0 {
		return n, fmt.Errorf("%d deletes failed; first: %w", r.errs, r.firstErr)
	}
	if r.stopped {
		return n, errors.New("interrupted")
	}
	for _, p := range notEmpty {
		m, err := b.removeAll(ctx, p)
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// latHist is a log-linear latency histogram: values below 2*histSub ns are
// counted exactly, above that each power of two is split into histSub
// buckets, so a reported quantile is within 1/(2*histSub) (0.4%) of a value
// that was recorded. It keeps p999 exact enough at any run length with
// memory bounded by the largest latency (a few thousand counters), where
// keeping every sample would need 8 bytes per request.
type latHist struct {
	counts   []uint64
	n        uint64
	sum      time.Duration
	min, max time.Duration
}

const (
	histSubBits = 7
	histSub     = 1 << histSubBits
)

// histBucket maps a value to its bucket: exact below 2*histSub, then
// histSub buckets per power of two.
func histBucket(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v>>e is in [histSub, 2*histSub)
	return e*histSub + int(v>>e)
}

// histRange returns the smallest value of bucket i and the bucket's width.
func histRange(i int) (low, width uint64) {
	if i < 2*histSub {
		return uint64(i), 1
	}
	e := i/histSub - 1
	return uint64(i-e*histSub) << e, 1 << e
}

func (h *latHist) record(d time.Duration) {
	d = max(d, 0)
	i := histBucket(uint64(d))
	if i >= len(h.counts) {
		h.counts = append(h.counts, make([]uint64, i+1-len(h.counts))...)
	}
	h.counts[i]++
	if h.n == 0 || d < h.min {
		h.min = d
	}
	if d > h.max {
		h.max = d
	}
	h.n++
	h.sum += d
}

func (h *latHist) merge(o *latHist) {
	if o.n == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.counts = append(h.counts, make([]uint64, len(o.counts)-len(h.counts))...)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

func (h *latHist) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// quantile returns the nearest-rank q-quantile: the smallest recorded value
// v such that at least ceil(q*n) values are <= v (so p999 of 1000 samples is
// the 999th smallest), approximated by the middle of v's bucket and clamped
// to the recorded minimum and maximum. 0 if nothing was recorded.
func (h *latHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	// The small slack keeps 0.999*1000 from rounding up to rank 1000.
	rank := uint64(math.Ceil(q*float64(h.n) - 1e-9))
	rank = min(max(rank, 1), h.n)
	if rank == h.n {
		return h.max
	}
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			low, width := histRange(i)
			v := time.Duration(low + (width-1)/2)
			return min(max(v, h.min), h.max)
		}
	}
	return h.max
}
