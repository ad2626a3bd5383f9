// Command kfakebroker runs franz-go's fake Kafka (pkg/kfake) as one broker
// configured from a Kafka server.properties, so the compatibility suite can
// start it exactly as it starts `herd broker --config server.properties`.
//
// Keys used: listeners (the PLAINTEXT host:port; the host must be
// 127.0.0.1), num.partitions, auto.create.topics.enable, log.dirs (the
// first directory holds kfake's persisted state, so a restart keeps the
// data), log.retention.check.interval.ms (kfake's retention interval) and
// kfake.in.memory=true (keep nothing on disk). broker.id is
// ignored: kfake numbers its nodes from 0. Other keys are ignored.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	config := flag.String("config", "", "server.properties")
	flag.Parse()
	if *config == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: kfakebroker --config server.properties")
		os.Exit(2)
	}
	props, err := readProperties(*config)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(2)
	}
	opts, err := options(props)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(2)
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(1)
	}
	fmt.Printf("kfakebroker: listening on %s\n", strings.Join(c.ListenAddrs(), ","))
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	<-sigs
	c.Close()
}

func options(p map[string]string) ([]kfake.Opt, error) {
	l := p["listeners"]
	hostport, ok := strings.CutPrefix(l, "PLAINTEXT://")
	if !ok || strings.Contains(hostport, ",") {
		return nil, fmt.Errorf("listeners=%q: want one PLAINTEXT://127.0.0.1:port", l)
	}
	host, portS, err := net.SplitHostPort(hostport)
	if err != nil || host != "127.0.0.1" {
		return nil, fmt.Errorf("listeners=%q: want PLAINTEXT://127.0.0.1:port (kfake listens on 127.0.0.1 only)", l)
	}
	port, err := strconv.Atoi(portS)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("listeners=%q: bad port", l)
	}
	opts := []kfake.Opt{kfake.Ports(port), kfake.NumBrokers(1), kfake.ClusterID("herd-compat")}
	if v, ok := p["num.partitions"]; ok {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("num.partitions=%q", v)
		}
		opts = append(opts, kfake.DefaultNumPartitions(n))
	}
	// Kafka's default is true.
	if v := p["auto.create.topics.enable"]; v == "" || v == "true" {
		opts = append(opts, kfake.AllowAutoTopicCreation())
	}
	// kfake applies retention (to topics with retention configs) every
	// log.cleaner.backoff.ms; Kafka checks every
	// log.retention.check.interval.ms.
	if v, ok := p["log.retention.check.interval.ms"]; ok {
		opts = append(opts, kfake.BrokerConfigs(map[string]string{"log.cleaner.backoff.ms": v}))
	}
	if p["kfake.in.memory"] != "true" {
		if dirs := p["log.dirs"]; dirs != "" {
			opts = append(opts, kfake.DataDir(filepath.Join(strings.Split(dirs, ",")[0], "kfake")))
		}
	}
	return opts, nil
}

// readProperties reads the key=value lines of a Java properties file
// (comments with # or !, no line continuations).
func readProperties(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			k, v, _ = strings.Cut(line, ":")
		}
		p[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return p, sc.Err()
}
