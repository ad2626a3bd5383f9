// Package kafka holds herd's Kafka broker compatibility suite: kafka-python
// 2.0.2, confluent-kafka 1.7.0 (librdkafka 2.0.2), kcat 1.7.1 and franz-go
// (kgo) produce to and consume from one local broker started from an
// ordinary server.properties by package compat/kafka/broker, and every
// answer is checked exactly.
//
// The target is chosen with HERD_COMPAT_KAFKA_TARGET: "herd" (default; the
// binary is built from herd/cmd/herd and run as `herd broker --config
// server.properties`) or "kfake" (franz-go's fake Kafka, the oracle the
// suite is validated against).
package kafka

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"herd/compat/kafka/broker"
)

var (
	target broker.Kind
	bin    string // the herd binary or the kfakebroker helper
)

func TestMain(m *testing.M) {
	switch t := os.Getenv("HERD_COMPAT_KAFKA_TARGET"); t {
	case "", "herd":
		target = broker.Herd
	case "kfake":
		target = broker.KFake
	default:
		fmt.Fprintf(os.Stderr, "HERD_COMPAT_KAFKA_TARGET=%q: want herd or kfake\n", t)
		os.Exit(2)
	}
	dir, err := os.MkdirTemp("", "herd-compat-kafka-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	switch target {
	case broker.Herd:
		bin = filepath.Join(dir, "herd")
		build := exec.Command("go", "build", "-o", bin, "herd/cmd/herd")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		err = build.Run()
	case broker.KFake:
		bin, err = broker.BuildKFake(dir)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "building the %s target: %v\n", target, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startBroker starts a broker of the selected target; it is stopped when t
// finishes. On failure the tail of its output is logged (and with
// HERD_COMPAT_KEEP=1 its directory is kept).
func startBroker(t *testing.T, opts broker.Options) *broker.Broker {
	t.Helper()
	dir, err := os.MkdirTemp("", "herd-compat-kafka-broker-")
	if err != nil {
		t.Fatal(err)
	}
	opts.Bin, opts.Dir = bin, dir
	start := time.Now()
	b, err := broker.Start(target, opts)
	if err != nil {
		os.RemoveAll(dir)
		t.Fatalf("starting %s broker: %v", target, err)
	}
	t.Logf("%s broker at %s (pid %d, node %d) ready in %v", target, b.Addr, b.PID(), b.NodeID, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		exited := b.Exited()
		if err := b.Stop(); err != nil {
			t.Errorf("stopping broker: %v", err)
		}
		if exited {
			t.Errorf("the broker process exited during the test")
		}
		if t.Failed() {
			t.Logf("--- broker output (tail) ---\n%s", b.LogTail(40))
			if os.Getenv("HERD_COMPAT_KEEP") != "" {
				t.Logf("broker config and logs kept in %s", dir)
				return
			}
		}
		os.RemoveAll(dir)
	})
	return b
}

// wantNodeID is the node id the broker must report for itself: broker.id
// for herd; kfake numbers its nodes from 0 whatever broker.id says.
func wantNodeID(opts broker.Options) int32 {
	if target == broker.KFake {
		return 0
	}
	if opts.BrokerID == 0 {
		return 1
	}
	return int32(opts.BrokerID)
}
