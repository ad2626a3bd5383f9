package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"herd/disk"
	"herd/node"
	"herd/node/broker"
	"herd/node/shell"
)

// brokerShutdownTimeout bounds the clean stop (flushing logs, writing
// checkpoints) before the shell is stopped anyway; recovery handles the
// rest.
const brokerShutdownTimeout = 30 * time.Second

func runBroker(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herd broker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", "", "path to server.properties (required)")
	verbose := fs.Bool("v", false, "log debug lines")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *config == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "herd broker: usage: herd broker --config server.properties")
		return 2
	}
	cfg, err := loadBrokerConfig(*config, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "herd broker:", err)
		return 2
	}
	var logw io.Writer
	if *verbose {
		logw = stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rb, err := startBroker(cfg, logw)
	if err != nil {
		fmt.Fprintln(stderr, "herd broker:", err)
		return 1
	}
	var addrs []string
	for _, l := range rb.cfg.Advertised {
		addrs = append(addrs, l.Name+"://"+l.Addr())
	}
	defer startEnvCPUProfile(int(cfg.BrokerID))()
	fmt.Fprintf(stdout, "herd broker %d: Kafka on %s (advertised %s), data in %s\n",
		cfg.BrokerID, strings.Join(rb.sh.Addrs(), ","), strings.Join(addrs, ","), cfg.LogDirs[0])
	if err := rb.run(ctx); err != nil {
		fmt.Fprintln(stderr, "herd broker:", err)
		return 1
	}
	fmt.Fprintln(stdout, "herd broker: stopped")
	return 0
}

// loadBrokerConfig reads server.properties, printing warnings.
func loadBrokerConfig(path string, stderr io.Writer) (broker.Config, error) {
	text, err := os.ReadFile(path)
	if err != nil {
		return broker.Config{}, err
	}
	cfg, err := broker.ParseServerProperties(string(text))
	if err != nil {
		return cfg, fmt.Errorf("%s: %v", path, err)
	}
	for _, w := range cfg.Warnings {
		fmt.Fprintf(stderr, "herd broker: warning: %s: %s\n", path, w)
	}
	return cfg, nil
}

// runningBroker is a broker core on a shell, built but maybe not running.
type runningBroker struct {
	sh  *shell.Shell
	fs  *disk.OS
	cfg broker.Config // with ports and advertised hosts resolved
}

// startBroker binds the listeners and builds the shell; run runs it. The
// listeners' port 0 becomes the bound port and an advertised host left
// empty or 0.0.0.0 becomes this machine's name, before the core starts.
func startBroker(cfg broker.Config, logw io.Writer) (*runningBroker, error) {
	if len(cfg.LogDirs) == 0 {
		return nil, errors.New("no log directory (log.dirs)")
	}
	f, err := disk.NewOS(cfg.LogDirs[0])
	if err != nil {
		return nil, err
	}
	tuneGC()
	var listen []string
	for _, l := range cfg.Listeners {
		host := l.Host
		if host == "" {
			host = "0.0.0.0"
		}
		listen = append(listen, broker.Listener{Host: host, Port: l.Port}.Addr())
	}
	rb := &runningBroker{fs: f}
	// The core is built when the shell runs, after the ports are known.
	factory := func(env node.Env) node.Machine { return broker.New(rb.cfg)(env) }
	// Kafka requests are length-prefixed frames of at most
	// socket.request.max.bytes: the shell reads a large one (a Produce)
	// straight into a buffer of its own, which the core keeps and hands to
	// the log without copying.
	sh, err := shell.New(shell.Config{Name: fmt.Sprintf("broker%d", cfg.BrokerID), FS: f, Listen: listen, Log: logw,
		FrameHint: cfg.SocketRequestMaxBytes, NoCombining: noCombining()}, factory)
	if err != nil {
		f.Close()
		return nil, err
	}
	ls := append([]broker.Listener(nil), cfg.Listeners...)
	for i, a := range sh.Addrs() {
		if _, port, err := net.SplitHostPort(a); err == nil {
			ls[i].Port, _ = strconv.Atoi(port)
		}
	}
	cfg.Listeners = ls
	adv := append([]broker.Listener(nil), cfg.Advertised...)
	if len(adv) == 0 {
		adv = append(adv, ls...)
	}
	hostname, _ := os.Hostname()
	for i := range adv {
		for _, l := range ls {
			if l.Name == adv[i].Name && adv[i].Port == 0 {
				adv[i].Port = l.Port
			}
		}
		if (adv[i].Host == "" || adv[i].Host == "0.0.0.0" || adv[i].Host == "::") && hostname != "" {
			adv[i].Host = hostname
		}
	}
	cfg.Advertised = adv
	rb.sh, rb.cfg = sh, cfg
	return rb, nil
}

// run runs the broker until ctx is done, then stops it cleanly: the core
// flushes its logs and writes its checkpoints before the shell stops.
func (rb *runningBroker) run(ctx context.Context) error {
	defer rb.fs.Close()
	defer startHeapTrim()()
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- rb.sh.Run(runCtx) }()
	select {
	case err := <-result:
		return err
	case <-ctx.Done():
	}
	closed := make(chan error, 1)
	err := rb.sh.Do(func(m node.Machine) {
		m.(*broker.Broker).Shutdown(func(err error) { closed <- err })
	})
	if err == nil {
		t := time.NewTimer(brokerShutdownTimeout)
		select {
		case err = <-closed:
			if err != nil {
				err = fmt.Errorf("closing the logs: %w", err)
			}
		case <-t.C:
			err = errors.New("closing the logs timed out")
		case err = <-result:
			t.Stop()
			return err
		}
		t.Stop()
	} else if errors.Is(err, shell.ErrNotRunning) {
		err = nil
	}
	cancel()
	if runErr := <-result; runErr != nil {
		return runErr
	}
	return err
}

// startDevBroker runs a broker for herd dev: Kafka's defaults, one
// PLAINTEXT listener on addr, its log in dataDir. stop stops it cleanly and
// waits for it.
func startDevBroker(ctx context.Context, dataDir, addr string, logw io.Writer) (stop func(), err error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("bad port in %q", addr)
	}
	cfg := broker.DefaultConfig(dataDir)
	cfg.Listeners = []broker.Listener{{Name: "PLAINTEXT", Host: host, Port: p}}
	rb, err := startBroker(cfg, logw)
	if err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := rb.run(runCtx); err != nil && logw != nil {
			fmt.Fprintln(logw, "herd dev: broker:", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
