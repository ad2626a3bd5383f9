// Package ensemble starts a local ZooKeeper-compatible ensemble on loopback:
// either herd's keeper (`herd keeper --config zoo.cfg`) or Apache ZooKeeper
// from the Debian packages, from the very same zoo.cfg files. The
// compatibility tests (herd/compat) and the benchmarks use it to run one
// workload against both servers.
//
// Every server gets its own directory under Options.Dir:
//
//	server-N/zoo.cfg      the standard config (tickTime, dataDir, clientPort, server.N lines, ...)
//	server-N/data/myid    N
//	server-N/server.log   stdout+stderr of the process (unless Options.Log is set)
//
// Processes run in their own process group with a parent-death signal, so
// they never outlive the test binary.
package ensemble

import (
	"errors"
	"fmt"
	"herd/compat/procutil"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-zookeeper/zk"
)

// Kind selects the server implementation.
type Kind string

const (
	Herd      Kind = "herd"
	ZooKeeper Kind = "zookeeper"
)

// Options configures Start.
type Options struct {
	Servers int    // number of servers: 1 or 3 (default 3)
	HerdBin string // path to the herd binary (Kind herd)
	// HerdFlags are added to `herd keeper --config <cfg>` (e.g. "-v" for
	// the debug log).
	HerdFlags []string
	Dir       string            // where configs and data go (default: fresh temp dir, removed by Stop)
	Extra     map[string]string // extra zoo.cfg keys, e.g. "extendedTypesEnabled": "true"
	Log       io.Writer         // server stdout/stderr, lines prefixed with "[sN] " (nil: server-N/server.log)

	// JVMFlags replaces ZooKeeperJVMFlags for Kind zookeeper (tests pass
	// FastStartJVMFlags; benchmarks keep the default full JIT). The env
	// var HERD_ZK_JVMFLAGS (space separated) overrides both.
	JVMFlags []string

	// StartTimeout bounds Start and Restart (default 60s).
	StartTimeout time.Duration

	// PeerPort, if set, gives the port on 127.0.0.1 that server `from` is
	// told (in its own zoo.cfg) to reach server `to`'s quorum port at, for
	// a fault-injecting proxy in between (ids are 1-based; port is the
	// real quorum port). The configs then differ per server, which herd
	// allows; ZooKeeper's election port is not proxied.
	PeerPort func(from, to, port int) (int, error)

	// Host, if set, gives the loopback address server id (1-based) listens
	// on, clients and peers alike (zoo.cfg's clientPortAddress and its
	// server.N line), instead of 127.0.0.1: with one address per server, a
	// test can drop packets between two servers by address (`ip rule`).
	Host func(id int) string
}

// Paths and flags used to run Apache ZooKeeper. They are variables so a
// caller can point them at another installation.
var (
	// ZooKeeperClasspath is the classpath of the Debian packages plus an
	// slf4j binding so the server logs to stdout.
	ZooKeeperClasspath = strings.Join([]string{
		"/etc/zookeeper/conf",
		"/usr/share/java/zookeeper.jar",
		"/usr/share/java/slf4j-log4j12.jar",
		"/usr/share/java/log4j-1.2.jar",
	}, ":")
	// ZooKeeperLog4j is the log4j 1.2 config (its CONSOLE appender is used).
	ZooKeeperLog4j = "/etc/zookeeper/conf/log4j.properties"
	// ZooKeeperJVMFlags are the default JVM flags: modest heap, full JIT.
	ZooKeeperJVMFlags = []string{"-Xms64m", "-Xmx512m", "-Djava.net.preferIPv4Stack=true"}
	// FastStartJVMFlags start a JVM in about a third of the time on a small
	// machine (C1 only, serial GC) at the cost of peak throughput: for
	// functional tests, not benchmarks.
	FastStartJVMFlags = []string{"-Xms32m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true"}
)

// Ensemble is a running set of servers.
type Ensemble struct {
	Addrs []string // client host:port of each server, index i is server id i+1
	Dir   string   // root directory of configs, data and logs

	kind    Kind
	opts    Options
	ownDir  bool
	logMu   sync.Mutex // serialises writes to opts.Log
	mu      sync.Mutex
	servers []*server
	stopped bool
}

type server struct {
	id                 int
	dir, cfg, data     string
	client, quorum, el int
	logPath            string

	mu      sync.Mutex
	rejoin  bool // herd: started on an emptied data directory (--rejoin)
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has exited
	logFile *os.File
	tail    *procutil.TailBuffer
}

// Start writes the configs and starts all servers, then waits until each
// answers `srvr` with a Mode of leader/follower/standalone and a
// go-zookeeper client connected to that server alone can create and delete
// a node.
func Start(kind Kind, opts Options) (*Ensemble, error) {
	switch kind {
	case Herd:
		if opts.HerdBin == "" {
			return nil, errors.New("ensemble: Options.HerdBin is required for kind herd")
		}
	case ZooKeeper:
	default:
		return nil, fmt.Errorf("ensemble: unknown kind %q", kind)
	}
	if opts.Servers == 0 {
		opts.Servers = 3
	}
	if opts.Servers < 1 {
		return nil, fmt.Errorf("ensemble: bad server count %d", opts.Servers)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 60 * time.Second
	}
	deadline := time.Now().Add(opts.StartTimeout)
	var lastErr error
	// A freshly picked port can be taken by someone else before the
	// server binds it; then retry with new ports.
	for attempt := 0; attempt < 3; attempt++ {
		e, err := start(kind, opts, deadline, attempt > 0)
		if err == nil {
			return e, nil
		}
		lastErr = err
		if !strings.Contains(strings.ToLower(err.Error()), "address already in use") || time.Now().After(deadline) {
			break
		}
	}
	return nil, lastErr
}

func start(kind Kind, opts Options, deadline time.Time, retry bool) (*Ensemble, error) {
	e := &Ensemble{kind: kind, opts: opts, Dir: opts.Dir}
	if e.Dir == "" {
		d, err := os.MkdirTemp("", "herd-ensemble-")
		if err != nil {
			return nil, err
		}
		e.Dir, e.ownDir = d, true
	}
	ports, err := procutil.FreePorts(3 * opts.Servers)
	if err != nil {
		e.Stop()
		return nil, err
	}
	for i := 0; i < opts.Servers; i++ {
		s := &server{id: i + 1, client: ports[3*i], quorum: ports[3*i+1], el: ports[3*i+2]}
		s.dir = filepath.Join(e.Dir, fmt.Sprintf("server-%d", s.id))
		s.cfg = filepath.Join(s.dir, "zoo.cfg")
		s.data = filepath.Join(s.dir, "data")
		s.logPath = filepath.Join(s.dir, "server.log")
		if retry {
			// forget the data of the failed attempt
			if err := os.RemoveAll(s.dir); err != nil {
				e.Stop()
				return nil, err
			}
		}
		e.servers = append(e.servers, s)
		e.Addrs = append(e.Addrs, net.JoinHostPort(e.host(s.id), strconv.Itoa(s.client)))
	}
	for _, s := range e.servers {
		if err := e.writeConfig(s); err != nil {
			e.Stop()
			return nil, err
		}
	}
	for _, s := range e.servers {
		if err := e.launch(s); err != nil {
			e.Stop()
			return nil, err
		}
	}
	for _, s := range e.servers {
		if err := e.waitReady(s, deadline, e.servers); err != nil {
			err = fmt.Errorf("ensemble: %s server %d (%s) not ready: %w\n%s", kind, s.id, e.Addrs[s.id-1], err, e.logTails())
			e.Stop()
			return nil, err
		}
	}
	return e, nil
}

// Kind reports which server implementation runs.
func (e *Ensemble) Kind() Kind { return e.kind }

// Hosts returns the connect string "h:p,h:p,h:p".
func (e *Ensemble) Hosts() string { return strings.Join(e.Addrs, ",") }

// ConfigPath returns the zoo.cfg of server i (0-based).
func (e *Ensemble) ConfigPath(i int) string { return e.servers[i].cfg }

// Index returns the 0-based index of the server with client address addr,
// or -1.
func (e *Ensemble) Index(addr string) int {
	for i, a := range e.Addrs {
		if a == addr {
			return i
		}
	}
	return -1
}

// PIDs returns the process id of each server (0 for a killed server).
func (e *Ensemble) PIDs() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	pids := make([]int, len(e.servers))
	for i, s := range e.servers {
		s.mu.Lock()
		if s.cmd != nil && s.cmd.Process != nil && !procutil.IsClosed(s.done) {
			pids[i] = s.cmd.Process.Pid
		}
		s.mu.Unlock()
	}
	return pids
}

// Kill SIGKILLs server i (0-based) and waits for it to exit.
func (e *Ensemble) Kill(i int) error {
	if i < 0 || i >= len(e.servers) {
		return fmt.Errorf("ensemble: no server %d", i)
	}
	return e.servers[i].kill()
}

// Restart kills server i (0-based) if it runs and starts it again with the
// same config and data; it waits until every running server is ready.
func (e *Ensemble) Restart(i int) error { return e.restart(i, false) }

// RestartWiped kills server i (0-based), empties its data directory (myid
// stays), as after a lost or replaced disk, and starts it again; herd is
// told so (--rejoin). It waits until every running server is ready.
func (e *Ensemble) RestartWiped(i int) error { return e.restart(i, true) }

func (e *Ensemble) restart(i int, wipe bool) error {
	if i < 0 || i >= len(e.servers) {
		return fmt.Errorf("ensemble: no server %d", i)
	}
	s := e.servers[i]
	if err := s.kill(); err != nil {
		return err
	}
	if wipe {
		ents, err := os.ReadDir(s.data)
		if err != nil {
			return err
		}
		for _, ent := range ents {
			if ent.Name() != "myid" {
				if err := os.RemoveAll(filepath.Join(s.data, ent.Name())); err != nil {
					return err
				}
			}
		}
	}
	s.mu.Lock()
	s.rejoin = wipe
	s.mu.Unlock()
	if err := e.launch(s); err != nil {
		return err
	}
	if err := e.waitReady(s, time.Now().Add(e.opts.StartTimeout), []*server{s}); err != nil {
		return fmt.Errorf("ensemble: restarted server %d (%s, wiped: %v) not ready: %w\n%s", s.id, e.Addrs[i], wipe, err, e.logTails())
	}
	return e.WaitReady(e.opts.StartTimeout)
}

// WaitReady waits until every running server answers srvr with a serving
// Mode and accepts a client that creates and deletes a node.
func (e *Ensemble) WaitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var running []*server
	for _, s := range e.servers {
		s.mu.Lock()
		if s.cmd != nil {
			running = append(running, s)
		}
		s.mu.Unlock()
	}
	for _, s := range running {
		if err := e.waitReady(s, deadline, running); err != nil {
			return fmt.Errorf("ensemble: server %d (%s) not ready: %w\n%s", s.id, e.Addrs[s.id-1], err, e.logTails())
		}
	}
	return nil
}

// Mode asks server i (0-based) for `srvr` and returns its Mode value
// ("leader", "follower", "standalone"), or an error.
func (e *Ensemble) Mode(i int) (string, error) {
	out, err := FourLetterWord(e.Addrs[i], "srvr", 2*time.Second)
	if err != nil {
		return "", err
	}
	m := modeRE.FindStringSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no Mode line in srvr output %q", out)
	}
	return m[1], nil
}

// Leader returns the index of the server reporting Mode leader (or
// standalone), or -1.
func (e *Ensemble) Leader() int {
	for i := range e.servers {
		if m, err := e.Mode(i); err == nil && (m == "leader" || m == "standalone") {
			return i
		}
	}
	return -1
}

// LogTail returns the last lines of server i's output.
func (e *Ensemble) LogTail(i int) string { return e.servers[i].tail.String() }

// Stop kills every server and removes the directory if Start created it.
func (e *Ensemble) Stop() error {
	e.mu.Lock()
	if e.stopped {
		e.mu.Unlock()
		return nil
	}
	e.stopped = true
	e.mu.Unlock()
	var first error
	for _, s := range e.servers {
		if err := s.kill(); err != nil && first == nil {
			first = err
		}
	}
	if e.ownDir {
		if err := os.RemoveAll(e.Dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// host is the address server id listens on (Options.Host).
func (e *Ensemble) host(id int) string {
	if e.opts.Host != nil {
		return e.opts.Host(id)
	}
	return "127.0.0.1"
}

func (e *Ensemble) writeConfig(s *server) error {
	if err := os.MkdirAll(s.data, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.data, "myid"), []byte(strconv.Itoa(s.id)+"\n"), 0o644); err != nil {
		return err
	}
	cfg := []procutil.KV{
		{"tickTime", "2000"},
		{"initLimit", "10"},
		{"syncLimit", "5"},
		{"dataDir", s.data},
		{"clientPort", strconv.Itoa(s.client)},
		{"clientPortAddress", e.host(s.id)},
	}
	for _, o := range e.servers {
		quorum := o.quorum
		if e.opts.PeerPort != nil && o != s {
			p, err := e.opts.PeerPort(s.id, o.id, o.quorum)
			if err != nil {
				return err
			}
			quorum = p
		}
		host := e.host(o.id)
		if quorum != o.quorum {
			host = "127.0.0.1" // PeerPort's proxy
		}
		cfg = append(cfg, procutil.KV{fmt.Sprintf("server.%d", o.id), fmt.Sprintf("%s:%d:%d", host, quorum, o.el)})
	}
	cfg = append(cfg, procutil.KV{"4lw.commands.whitelist", "*"}, procutil.KV{"admin.enableServer", "false"})
	return os.WriteFile(s.cfg, []byte(procutil.Properties(cfg, e.opts.Extra)), 0o644)
}

func (e *Ensemble) command(s *server) (*exec.Cmd, error) {
	switch e.kind {
	case Herd:
		args := []string{"keeper", "--config", s.cfg}
		s.mu.Lock()
		if s.rejoin {
			args = append(args, "--rejoin")
		}
		s.mu.Unlock()
		args = append(args, e.opts.HerdFlags...)
		return exec.Command(e.opts.HerdBin, args...), nil
	default:
		java, err := exec.LookPath("java")
		if err != nil {
			java = "/usr/bin/java"
		}
		flags := ZooKeeperJVMFlags
		if e.opts.JVMFlags != nil {
			flags = e.opts.JVMFlags
		}
		if f := strings.Fields(os.Getenv("HERD_ZK_JVMFLAGS")); len(f) > 0 {
			flags = f
		}
		args := append([]string{}, flags...)
		args = append(args,
			"-Dzookeeper.log.dir="+s.dir,
			"-Dzookeeper.log.file=zookeeper.log",
			"-Dzookeeper.root.logger=INFO,CONSOLE",
			"-Dlog4j.configuration=file:"+ZooKeeperLog4j,
			"-cp", ZooKeeperClasspath,
			"org.apache.zookeeper.server.quorum.QuorumPeerMain", s.cfg)
		cmd := exec.Command(java, args...)
		cmd.Env = append(os.Environ(), "ZOO_LOG_DIR="+s.dir)
		return cmd, nil
	}
}

func (e *Ensemble) launch(s *server) error {
	cmd, err := e.command(s)
	if err != nil {
		return err
	}
	cmd.Dir = s.dir
	cmd.SysProcAttr = procutil.ChildProcAttr()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tail == nil {
		s.tail = &procutil.TailBuffer{Max: 64 << 10}
	}
	var out io.Writer
	if e.opts.Log != nil {
		out = &procutil.PrefixWriter{Mu: &e.logMu, W: e.opts.Log, Prefix: fmt.Sprintf("[s%d] ", s.id)}
	} else {
		f, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		s.logFile = f
		out = procutil.BestEffort{W: f} // the tail must get the output on a full disk too
	}
	w := io.MultiWriter(out, s.tail)
	fmt.Fprintf(w, "=== ensemble: starting server %d: %s\n", s.id, strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		if s.logFile != nil {
			s.logFile.Close()
			s.logFile = nil
		}
		return fmt.Errorf("ensemble: starting server %d: %w", s.id, err)
	}
	s.cmd = cmd
	done := make(chan struct{})
	s.done = done
	lf := s.logFile
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(s.tail, "=== ensemble: server %d exited: %v\n", s.id, err)
		if lf != nil {
			lf.Close()
		}
		close(done)
	}()
	return nil
}

func (s *server) kill() error {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.logFile = nil
	s.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := procutil.KillGroup(cmd, done, 30*time.Second); err != nil {
		return fmt.Errorf("ensemble: server %d: %v", s.id, err)
	}
	return nil
}

var modeRE = regexp.MustCompile(`(?m)^Mode: (\S+)`)

// waitReady waits until server s serves clients; it fails as soon as any
// of the servers in alive has exited.
func (e *Ensemble) waitReady(s *server, deadline time.Time, alive []*server) error {
	addr := e.Addrs[s.id-1]
	dones := map[int]chan struct{}{}
	for _, a := range alive {
		a.mu.Lock()
		dones[a.id] = a.done
		a.mu.Unlock()
	}
	var last error = errors.New("no answer yet")
	for {
		if procutil.IsClosed(dones[s.id]) {
			return errors.New("process exited")
		}
		for id, done := range dones {
			if procutil.IsClosed(done) {
				return fmt.Errorf("server %d's process exited", id)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out: %v", last)
		}
		out, err := FourLetterWord(addr, "srvr", time.Second)
		if err != nil {
			last = err
		} else if m := modeRE.FindStringSubmatch(out); m == nil {
			last = fmt.Errorf("srvr: %q", strings.TrimSpace(out))
		} else if m[1] != "leader" && m[1] != "follower" && m[1] != "standalone" {
			last = fmt.Errorf("srvr: mode %q", m[1])
		} else if err := clientCheck(addr, deadline); err != nil {
			last = fmt.Errorf("client check: %w", err)
		} else {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...interface{}) {}

// clientCheck connects a go-zookeeper client to addr only and creates and
// deletes a node.
func clientCheck(addr string, deadline time.Time) error {
	wait := time.Until(deadline)
	if wait > 15*time.Second {
		wait = 15 * time.Second
	}
	if wait <= 0 {
		return errors.New("deadline passed")
	}
	conn, events, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(nopLogger{}), zk.WithLogInfo(false))
	if err != nil {
		return err
	}
	defer func() {
		conn.Close()
		// wait for go-zk's goroutines to finish (the channel closes last)
		drain := time.After(5 * time.Second)
		for {
			select {
			case _, ok := <-events:
				if !ok {
					return
				}
			case <-drain:
				return
			}
		}
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for connected := false; !connected; {
		select {
		case ev := <-events:
			if ev.State == zk.StateHasSession {
				connected = true
			}
		case <-timer.C:
			return errors.New("no session")
		}
	}
	res := make(chan error, 1)
	go func() {
		p, err := conn.Create(fmt.Sprintf("/ensemble-ready-%d-%d", os.Getpid(), time.Now().UnixNano()), []byte("x"), 0, zk.WorldACL(zk.PermAll))
		if err == nil {
			err = conn.Delete(p, 0)
		}
		res <- err
	}()
	select {
	case err := <-res:
		return err
	case <-timer.C:
		conn.Close()
		<-res
		return errors.New("create/delete timed out")
	}
}

// FourLetterWord sends a four-letter command to addr and returns the whole
// answer (the server closes the connection after answering).
func FourLetterWord(addr, cmd string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte(cmd)); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return string(b), err
	}
	return string(b), nil
}

func (e *Ensemble) logTails() string {
	var b strings.Builder
	for _, s := range e.servers {
		fmt.Fprintf(&b, "--- tail of server %d output (%s) ---\n", s.id, s.logPath)
		b.WriteString(procutil.LastLines(s.tail.String(), 40))
	}
	return b.String()
}
