package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"herd/disk"
	"herd/node/keeper"
	"herd/node/raft"
	"herd/node/shell"
)

// keeperPlantableBugs are the planted bugs `herd keeper --plant-bug` takes:
// those whose effect a real-process test can see.
var keeperPlantableBugs = []string{keeper.BugStaleSync, keeper.BugLateWatch, keeper.BugServeBehind,
	raft.BugAckBeforeDurable, raft.BugCommitOnMinority, raft.BugNoTruncate}

func runKeeper(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "path to zoo.cfg (required)")
	verbose := fs.Bool("v", false, "log debug lines")
	rejoin := fs.Bool("rejoin", false, "this server's data directory was lost or replaced while the rest of the ensemble kept its "+
		"data: starting empty, it neither votes nor acknowledges until the others have caught it up "+
		"(without it, an empty server may help a stale leader overwrite committed data); ignored when "+
		"the data directory is not empty, so keep it on restarts until the server logs \"caught up\"")
	plant := fs.String("plant-bug", "", "for fault tests only: switch on one of the planted bugs the simulator's checkers "+
		"are shown to catch ("+strings.Join(keeperPlantableBugs, ", ")+"), so a real-process test can show that it catches it too")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *plant != "" && !slices.Contains(keeperPlantableBugs, *plant) {
		fmt.Fprintf(stderr, "herd keeper: --plant-bug %q: want one of %s\n", *plant, strings.Join(keeperPlantableBugs, ", "))
		return 2
	}
	if *config == "" {
		fmt.Fprintln(stderr, "herd keeper: --config zoo.cfg is required")
		return 2
	}
	cfg, err := loadKeeperConfig(*config, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "herd keeper:", err)
		return 2
	}
	cfg.Rejoin = *rejoin
	if *plant != "" {
		cfg.Bug = *plant
		fmt.Fprintf(stderr, "herd keeper: warning: planted bug %q switched on: this server is wrong on purpose\n", *plant)
	}
	var logw io.Writer
	if *verbose {
		logw = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sh, closeFS, err := startKeeper(cfg, logw)
	if err != nil {
		fmt.Fprintln(stderr, "herd keeper:", err)
		return 1
	}
	defer closeFS()
	defer startEnvCPUProfile(int(cfg.ID))()
	fmt.Fprintf(stdout, "herd keeper %d: clients on %s, data in %s\n", cfg.ID, sh.Addrs()[0], cfg.DataDir)
	if err := sh.Run(ctx); err != nil {
		fmt.Fprintln(stderr, "herd keeper:", err)
		return 1
	}
	return 0
}

// loadKeeperConfig reads zoo.cfg and myid, printing warnings.
func loadKeeperConfig(path string, stderr io.Writer) (keeper.Config, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return keeper.Config{}, err
	}
	cfg, err := keeper.ParseZooCfg(string(text))
	if err != nil {
		return cfg, fmt.Errorf("%s: %v", path, err)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "herd keeper: warning: %s: %s\n", path, w)
	}
	if len(cfg.Servers) == 0 {
		cfg.ID = 1 // standalone, as ZooKeeper without server.N lines
		return cfg, nil
	}
	myid, err := os.ReadFile(filepath.Join(cfg.DataDir, "myid"))
	if err != nil {
		return cfg, fmt.Errorf("reading myid: %v (each server of an ensemble needs dataDir/myid)", err)
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(myid)), 10, 8)
	if err != nil || id == 0 {
		return cfg, fmt.Errorf("%s/myid: %q is not a server id (1-255)", cfg.DataDir, strings.TrimSpace(string(myid)))
	}
	cfg.ID = raft.ID(id)
	for _, s := range cfg.Servers {
		if s.ID == cfg.ID {
			return cfg, nil
		}
	}
	return cfg, fmt.Errorf("myid %d has no server.%d line in %s", id, id, path)
}

// noCombining is a measuring knob of herd keeper and herd broker: with
// HERD_SHELL_NO_COMBINING=1 every event goes through the shell's loop
// goroutine (shell.Config.NoCombining), as before combining.
func noCombining() bool { return os.Getenv("HERD_SHELL_NO_COMBINING") == "1" }

// startKeeper builds the shell for one keeper server; the caller runs it.
func startKeeper(cfg keeper.Config, logw io.Writer) (*shell.Shell, func(), error) {
	cfg.FileDescriptors = fileDescriptors
	cfg.Recovered = trimAfterRecovery
	// A measuring knob: the same binary with and without followers'
	// acknowledgements to each other (raft.Config.NoPeerAcks), so that a
	// side-by-side run compares only that. Any mix of servers with and
	// without it is correct (a leader's read floor does not depend on it).
	cfg.NoPeerAcks = os.Getenv("HERD_NO_PEER_ACKS") == "1"
	if v, err := strconv.ParseInt(os.Getenv("HERD_WAL_FILL"), 10, 64); err == nil && (v < 0 || v%512 == 0) {
		cfg.WALFill = v // measuring knob too: how far ahead WAL segments are filled (raft.Config.WALFill)
	}
	tuneGC()
	stopTrim := startHeapTrim()
	logDir := cfg.DataLogDir
	if logDir == "" {
		logDir = cfg.DataDir
	}
	f, err := disk.NewOS(logDir)
	if err != nil {
		stopTrim()
		return nil, nil, err
	}
	listen := []string{cfg.ClientAddr}
	var dialFrom string
	for _, s := range cfg.Servers {
		if s.ID == cfg.ID && len(cfg.Servers) > 1 {
			listen = append(listen, s.PeerAddr())
			dialFrom = listenIP(s.PeerAddr())
		}
	}
	sh, err := shell.New(shell.Config{Name: fmt.Sprintf("keeper%d", cfg.ID), FS: f, Listen: listen, Log: logw,
		DialFrom: dialFrom, DialUserTimeout: peerUserTimeout(cfg),
		NoCombining: noCombining()}, keeper.New(cfg))
	if err != nil {
		f.Close()
		stopTrim()
		return nil, nil, err
	}
	return sh, func() { f.Close(); stopTrim() }, nil
}

// listenIP is the IP address a listener on addr binds (a host name resolved
// as net.Listen resolves it), or "" for a wildcard or unresolvable host. A
// server dials its peers from the address it listens on for them, so that
// they (and packet filters between them) see its connections come from the
// address its server.N line names.
func listenIP(addr string) string {
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil || a.IP == nil || a.IP.IsUnspecified() {
		return ""
	}
	return a.IP.String()
}

// peerUserTimeout bounds how long a peer connection may hold data its peer
// has not acknowledged (shell.Config.DialUserTimeout): syncLimit ticks,
// ZooKeeper's bound on a follower's silence. HERD_PEER_USER_TIMEOUT (a Go
// duration, 0 for none) overrides it, a knob for fault tests that show
// what the bound is for.
func peerUserTimeout(cfg keeper.Config) time.Duration {
	if v, err := time.ParseDuration(os.Getenv("HERD_PEER_USER_TIMEOUT")); err == nil && v >= 0 {
		return v
	}
	return time.Duration(cfg.SyncLimit) * cfg.TickTime
}

// startEnvCPUProfile profiles the process into $HERD_CPUPROFILE (with %d
// replaced by id) until the returned stop: for servers started by tools that
// cannot pass flags (compat/ensemble, compat/kafka). The profile ends at a
// clean stop.
func startEnvCPUProfile(id int) (stop func()) {
	p := os.Getenv("HERD_CPUPROFILE")
	if p == "" {
		return func() {}
	}
	if strings.Contains(p, "%d") {
		p = fmt.Sprintf(p, id)
	}
	stop, err := startCPUProfile(p)
	if err != nil {
		return func() {}
	}
	return stop
}

// startCPUProfile profiles the whole process into the file at path until
// the returned stop.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// fileDescriptors counts the process's open file descriptors (/proc/self/fd,
// the directory's own descriptor not included) and reports their soft limit,
// as ZooKeeper's mntr does on Unix; ok is false where /proc is missing.
func fileDescriptors() (open, max int64, ok bool) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, false
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, false
	}
	return int64(len(fds) - 1), int64(lim.Cur), true
}
