package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"herd/disk"
	"herd/node/keeper"
	"herd/node/raft"
	"herd/node/shell"
)

func runKeeper(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd keeper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "path to zoo.cfg (required)")
	verbose := fs.Bool("v", false, "log debug lines")
	if err := fs.Parse(args); err != nil {
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
	// HERD_CPUPROFILE=/path/prof-%d profiles each server of an ensemble
	// started by tools that cannot pass flags (compat/ensemble).
	if p := os.Getenv("HERD_CPUPROFILE"); p != "" {
		if strings.Contains(p, "%d") {
			p = fmt.Sprintf(p, cfg.ID)
		}
		if f, err := os.Create(p); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer func() { pprof.StopCPUProfile(); f.Close() }()
			}
		}
	}
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

// startKeeper builds the shell for one keeper server; the caller runs it.
func startKeeper(cfg keeper.Config, logw io.Writer) (*shell.Shell, func(), error) {
	keeperGC()
	logDir := cfg.DataLogDir
	if logDir == "" {
		logDir = cfg.DataDir
	}
	f, err := disk.NewOS(logDir)
	if err != nil {
		return nil, nil, err
	}
	listen := []string{cfg.ClientAddr}
	for _, s := range cfg.Servers {
		if s.ID == cfg.ID && len(cfg.Servers) > 1 {
			listen = append(listen, s.PeerAddr())
		}
	}
	sh, err := shell.New(shell.Config{Name: fmt.Sprintf("keeper%d", cfg.ID), FS: f, Listen: listen, Log: logw}, keeper.New(cfg))
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return sh, func() { f.Close() }, nil
}

// keeperGC sets the garbage collector's target for a keeper process unless
// the user chose one (GOGC): the data tree is a large, long-lived heap, and
// Go's default (collect when the heap doubles) would let resident memory
// reach twice the tree. 50 keeps it near 1.5 times for a few percent of CPU.
func keeperGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(keeperGCPercent)
	}
}

const keeperGCPercent = 50
