package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"herd/disk"
	"herd/node"
	"herd/node/demo"
	"herd/node/keeper"
	"herd/node/raft"
	"herd/node/shell"
)

// devAddrs are the demo protocol's default addresses (herd demo-client).
var devAddrs = []string{"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}

// devBrokerAddr is where `herd dev` runs its broker: Kafka's default port.
const devBrokerAddr = "127.0.0.1:9092"

// runDev starts a 3-server keeper ensemble on 127.0.0.1:2181-2183 and one
// broker on 127.0.0.1:9092, with their data in one directory, so a restart
// recovers it.
func runDev(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	defDir := filepath.Join(os.TempDir(), "herd-dev")
	if d, err := os.UserCacheDir(); err == nil {
		defDir = filepath.Join(d, "herd", "dev")
	}
	dataDir := fs.String("data", defDir, "directory holding the servers' data")
	verbose := fs.Bool("v", false, "log the servers' debug lines")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole ensemble to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" {
		stopProfile, err := startCPUProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, "herd dev:", err)
			return 1
		}
		defer stopProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var logw io.Writer
	if *verbose {
		logw = stderr
	}
	var servers []keeper.ServerSpec
	for i := range 3 {
		servers = append(servers, keeper.ServerSpec{ID: raft.ID(i + 1), Host: "127.0.0.1", QuorumPort: 2888 + i, ElectionPort: 3888 + i})
	}
	var shells []*shell.Shell
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for i := range 3 {
		cfg := keeper.Config{
			ID: raft.ID(i + 1), ClientAddr: fmt.Sprintf("127.0.0.1:%d", 2181+i), Servers: servers,
			DataDir: filepath.Join(*dataDir, fmt.Sprintf("keeper%d", i+1)), FourLetter: []string{"*"},
		}
		cfg.Defaults()
		sh, closeFS, err := startKeeper(cfg, logw)
		if err != nil {
			fmt.Fprintf(stderr, "herd dev: keeper %d: %v\n", i+1, err)
			return 1
		}
		closers = append(closers, closeFS)
		shells = append(shells, sh)
	}
	stopBroker, err := startDevBroker(ctx, filepath.Join(*dataDir, "broker"), devBrokerAddr, logw)
	if err != nil {
		fmt.Fprintf(stderr, "herd dev: broker: %v\n", err)
		for _, sh := range shells {
			sh.Close()
		}
		return 1
	}
	defer stopBroker()
	fmt.Fprintln(stdout, "herd dev: keeper ensemble (ZooKeeper-compatible) on 127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183")
	fmt.Fprintf(stdout, "herd dev: broker (Kafka-compatible) on %s\n", devBrokerAddr)
	fmt.Fprintf(stdout, "herd dev: data in %s (a restart recovers it)\n", *dataDir)
	fmt.Fprintln(stdout, "herd dev: try: zkCli.sh -server 127.0.0.1:2181   or   kcat -b 127.0.0.1:9092 -L")
	fmt.Fprintln(stdout, "herd dev: Ctrl-C stops")
	errs := make([]error, len(shells))
	var wg sync.WaitGroup
	for i, sh := range shells {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sh.Run(ctx)
			stop() // one server failing stops the cluster
		}()
	}
	wg.Wait()
	code := 0
	for i, err := range errs {
		if err != nil {
			fmt.Fprintf(stderr, "herd dev: keeper %d: %v\n", i+1, err)
			code = 1
		}
	}
	fmt.Fprintln(stdout, "herd dev: stopped")
	return code
}

func runDemoServer(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd demo-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7001", "address to listen on")
	peers := fs.String("peers", "", "comma-separated addresses of all servers")
	dataDir := fs.String("data", "", "data directory (required)")
	verbose := fs.Bool("v", false, "log debug lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *dataDir == "" {
		fmt.Fprintln(stderr, "herd demo-server: --data is required")
		return 2
	}
	f, err := disk.NewOS(*dataDir)
	if err != nil {
		fmt.Fprintf(stderr, "herd demo-server: %v\n", err)
		return 1
	}
	defer f.Close()
	var logw io.Writer
	if *verbose {
		logw = stderr
	}
	sh, err := shell.New(shell.Config{Name: *listen, FS: f, Listen: []string{*listen}, Log: logw},
		demo.NewServer(demo.Config{Listen: *listen, Peers: splitList(*peers)}))
	if err != nil {
		fmt.Fprintf(stderr, "herd demo-server: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening %s\n", sh.Addrs()[0])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := sh.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "herd demo-server: %v\n", err)
		return 1
	}
	return 0
}

// runDemoClient appends records and prints "sent SERVER PAYLOAD" and "ack
// SERVER OFFSET PAYLOAD" lines, so a test can check the servers' logs against
// what they acknowledged.
func runDemoClient(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd demo-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	servers := fs.String("servers", strings.Join(devAddrs, ","), "comma-separated server addresses")
	appends := fs.Int("appends", 1000, "records to get acknowledged")
	window := fs.Int("window", 16, "appends in flight")
	name := fs.String("name", "client", "client name (prefix of every payload)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var mu sync.Mutex // the client core's callbacks run on its loop; the lock orders output
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigCtx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	failed := ""
	cfg := demo.ClientConfig{
		Name: *name, Servers: splitList(*servers), Appends: *appends, Window: *window,
		OnSent: func(server string, p []byte) {
			mu.Lock()
			fmt.Fprintf(stdout, "sent %s %s\n", server, p)
			mu.Unlock()
		},
		OnAck: func(server string, off int64, p []byte) {
			mu.Lock()
			fmt.Fprintf(stdout, "ack %s %d %s\n", server, off, p)
			mu.Unlock()
		},
		OnViolation: func(msg string) { failed = msg; cancel() },
		OnDone:      cancel,
	}
	sh, err := shell.New(shell.Config{Name: *name, FS: noDisk{}}, demo.NewClient(cfg))
	if err != nil {
		fmt.Fprintf(stderr, "herd demo-client: %v\n", err)
		return 1
	}
	if err := sh.Run(sigCtx); err != nil {
		fmt.Fprintf(stderr, "herd demo-client: %v\n", err)
		return 1
	}
	if failed != "" {
		fmt.Fprintf(stderr, "herd demo-client: protocol violation: %s\n", failed)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// noDisk is the disk of a diskless node (a client): every operation fails.
type noDisk struct{}

var errNoDisk = fmt.Errorf("%w: this node has no disk", node.ErrInvalid)

func (noDisk) ReadAt(string, int64, int) ([]byte, error) { return nil, errNoDisk }
func (noDisk) WriteAt(string, int64, []byte) error       { return errNoDisk }
func (noDisk) Truncate(string, int64) error              { return errNoDisk }
func (noDisk) Sync(string) error                         { return errNoDisk }
func (noDisk) SyncDir(string) error                      { return errNoDisk }
func (noDisk) Mkdir(string) error                        { return errNoDisk }
func (noDisk) Rename(string, string) error               { return errNoDisk }
func (noDisk) Remove(string) error                       { return errNoDisk }
func (noDisk) List(string) ([]node.DirEntry, error)      { return nil, errNoDisk }
func (noDisk) Stat(string) (node.DirEntry, error)        { return node.DirEntry{}, errNoDisk }
