package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestBrokerFlags(t *testing.T) {
	c, err := parseBrokerFlags([]string{"produce", "--brokers", "127.0.0.1:9092, kafka2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.brokers, ",") != "127.0.0.1:9092,kafka2:9092" {
		t.Errorf("brokers %q", c.brokers)
	}
	if c.topic != "herd-bench" || c.partitions != 6 || c.records != 1_000_000 || c.size != 100 || c.acks != 1 ||
		c.compression != "none" || c.producers != 1 || c.batchBytes != 1_000_000 || c.json {
		t.Errorf("produce defaults: %+v", c)
	}
	if c, err := parseBrokerFlags([]string{"consume", "--brokers", "h:1"}, io.Discard); err != nil || c.records != 0 {
		t.Errorf("consume defaults: %v %+v", err, c)
	}
	if c, err := parseBrokerFlags([]string{"e2e", "--brokers", "h:1", "--rate", "100", "--acks", "-1"}, io.Discard); err != nil || c.records != 10_000 || c.rate != 100 || c.acks != -1 {
		t.Errorf("e2e: %v %+v", err, c)
	}

	b := "--brokers=127.0.0.1:9092"
	bad := [][]string{
		{},
		{"nope", b},
		{"--brokers", "h:1"},
		{"produce"},
		{"produce", "--brokers", ""},
		{"produce", "--brokers", "h:0"},
		{"produce", "--brokers", "h:x"},
		{"produce", "--brokers", ":9092"},
		{"produce", b, "--topic", "a b"},
		{"produce", b, "--topic", ""},
		{"produce", b, "--topic", ".."},
		{"produce", b, "--partitions", "0"},
		{"produce", b, "--replication-factor", "0"},
		{"produce", b, "--records", "0"},
		{"produce", b, "--record-size", "-1"},
		{"produce", b, "--acks", "2"},
		{"produce", b, "--batch-bytes", "10"},
		{"produce", b, "--linger", "-1ms"},
		{"produce", b, "--compression", "brotli"},
		{"produce", b, "--producers", "0"},
		{"produce", b, "--max-buffered", "0"},
		{"produce", b, "--buffer-bytes", "99", "--record-size", "100"},
		{"produce", b, "--max-inflight", "0"},
		{"produce", b, "--rate", "5"}, // e2e only
		{"consume", b, "--records", "-1"},
		{"consume", b, "--acks", "1"}, // produce and e2e only
		{"consume", b, "--fetch-max-bytes", "10"},
		{"consume", b, "--consumers", "0"},
		{"produce", b, "--consumers", "2"}, // consume only
		{"e2e", b, "--record-size", "15"},
		{"e2e", b, "--rate", "-1"},
		{"e2e", b, "--timeout", "0s"},
		{"e2e", b, "--producers", "2"},
		{"produce", b, "--connect-timeout", "0s"},
		{"produce", b, "extra"},
	}
	for _, args := range bad {
		if _, err := parseBrokerFlags(args, io.Discard); err == nil {
			t.Errorf("%q: accepted", args)
		}
		var out, errb bytes.Buffer
		if code := benchBroker(args, &out, &errb); code != 2 {
			t.Errorf("%q: exit %d, want 2\n%s%s", args, code, out.String(), errb.String())
		}
	}
	for _, args := range [][]string{{"--help"}, {"produce", "--help"}, {"e2e", "-h"}} {
		var errb bytes.Buffer
		if code := benchBroker(args, io.Discard, &errb); code != 0 || !strings.Contains(errb.String(), "usage: herd bench broker") {
			t.Errorf("%q: exit %d\n%s", args, code, errb.String())
		}
	}
	var errb bytes.Buffer
	if code := runBench([]string{"broker", "produce", "--help"}, io.Discard, &errb); code != 0 || !strings.Contains(errb.String(), "-max-buffered") {
		t.Errorf("herd bench broker produce --help: exit %d\n%s", code, errb.String())
	}
}

// silentListener accepts connections and never answers.
func silentListener(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// Unreachable brokers: a one-line error and exit 1 within a bounded time,
// both when nothing listens and when something accepts but never answers.
func TestBrokerUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	silent := silentListener(t)
	for _, c := range []struct{ addr, want string }{{refused, "connection refused"}, {silent, "got no Metadata reply"}} {
		for _, mode := range brokerModes {
			var out, errb bytes.Buffer
			start := time.Now()
			code := benchBroker([]string{mode, "--brokers", c.addr, "--connect-timeout", "1s"}, &out, &errb)
			took := time.Since(start)
			msg := errb.String()
			if code != 1 || !strings.Contains(msg, c.addr) || !strings.Contains(msg, c.want) || strings.Count(msg, "\n") != 1 {
				t.Errorf("%s %s: exit %d, want 1 and one line naming it (%q):\n%s", mode, c.addr, code, c.want, msg)
			}
			if took > 5*time.Second {
				t.Errorf("%s %s: took %v", mode, c.addr, took)
			}
		}
	}
}

// startKfake starts an in-process kfake broker; it is closed when t ends.
func startKfake(t *testing.T, opts ...kfake.Opt) (*kfake.Cluster, string) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, c.ListenAddrs()[0]
}

func runBrokerJSON(t *testing.T, args ...string) (brokerReport, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := benchBroker(append(args, "--json"), &out, &errb)
	var r brokerReport
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if code == 0 && len(lines) != 1 {
		t.Fatalf("%q: %d output lines, want one JSON line:\n%s\nstderr:\n%s", args, len(lines), out.String(), errb.String())
	}
	if out.Len() > 0 {
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &r); err != nil {
			t.Fatalf("%q: output %q is not JSON: %v\nstderr:\n%s", args, out.String(), err, errb.String())
		}
	}
	return r, errb.String(), code
}

// topicState asks the broker directly for the topic's partition count and
// the records it holds (sum of end minus start offsets).
func topicState(t *testing.T, addr, topic string) (partitions int, records int64) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = kmsg.StringPtr(topic)
	md.Topics = append(md.Topics, mt)
	mresp, err := md.RequestWith(ctx, cl)
	if err != nil || len(mresp.Topics) != 1 || mresp.Topics[0].ErrorCode != 0 {
		t.Fatalf("metadata for %s: %v %+v", topic, err, mresp)
	}
	partitions = len(mresp.Topics[0].Partitions)
	for _, ts := range []int64{-1, -2} {
		req := kmsg.NewPtrListOffsetsRequest()
		rt := kmsg.NewListOffsetsRequestTopic()
		rt.Topic = topic
		for p := range partitions {
			rp := kmsg.NewListOffsetsRequestTopicPartition()
			rp.Partition, rp.Timestamp = int32(p), ts
			rt.Partitions = append(rt.Partitions, rp)
		}
		req.Topics = append(req.Topics, rt)
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range resp.Topics[0].Partitions {
			if ts == -1 {
				records += p.Offset
			} else {
				records -= p.Offset
			}
		}
	}
	return partitions, records
}

func checkLatencies(t *testing.T, what string, r brokerReport) {
	t.Helper()
	if r.P50Us <= 0 || r.P50Us > r.P99Us || r.P99Us > r.P999Us || r.P999Us > r.MaxUs || r.MeanUs <= 0 || r.MeanUs > r.MaxUs {
		t.Errorf("%s: implausible latencies: mean %v p50 %v p99 %v p999 %v max %v", what, r.MeanUs, r.P50Us, r.P99Us, r.P999Us, r.MaxUs)
	}
}

// brokerScenario runs produce, consume and e2e against addr and checks the
// reports against what the broker holds afterwards.
func brokerScenario(t *testing.T, addr string) {
	topic := fmt.Sprintf("herd-bench-test-%d", time.Now().UnixNano())
	common := []string{"--brokers", addr, "--topic", topic, "--connect-timeout", "10s"}

	r, stderr, code := runBrokerJSON(t, append([]string{"produce"}, append(common, "--records", "20011", "--record-size", "64", "--partitions", "4", "--producers", "3")...)...)
	if code != 0 {
		t.Fatalf("produce: exit %d\n%s", code, stderr)
	}
	if r.Mode != "produce" || r.Records != 20011 || r.Bytes != 20011*64 || r.Errors != 0 || r.Partitions != 4 || r.Producers != 3 ||
		r.RecordSize != 64 || r.Acks == nil || *r.Acks != 1 || r.Topic != topic || r.RecordsPerSec <= 0 || r.MBPerSec <= 0 {
		t.Errorf("produce report %+v", r)
	}
	checkLatencies(t, "produce", r)
	if parts, n := topicState(t, addr, topic); parts != 4 || n != 20011 {
		t.Errorf("after produce the broker has %d partitions and %d records, want 4 and 20011", parts, n)
	}

	// Again into the existing topic, compressed, acks=-1 and acks=0.
	for _, extra := range [][]string{{"--compression", "zstd", "--acks", "-1"}, {"--compression", "lz4", "--acks", "0"}} {
		r, stderr, code = runBrokerJSON(t, append(append([]string{"produce"}, common...), append(extra, "--records", "5000", "--record-size", "64")...)...)
		if code != 0 || r.Records != 5000 || r.Errors != 0 || r.Compression != extra[1] {
			t.Errorf("produce %v: exit %d, report %+v\n%s", extra, code, r, stderr)
		}
		if extra[3] == "0" && (r.P50Us != 0 || r.MaxUs != 0) {
			t.Errorf("acks=0 reports latencies %+v, but there are no acknowledgements", r)
		} else if extra[3] != "0" {
			checkLatencies(t, "produce "+strings.Join(extra, " "), r)
		}
	}
	if parts, n := topicState(t, addr, topic); parts != 4 || n != 30011 {
		t.Errorf("after three runs the broker has %d partitions and %d records, want 4 and 30011", parts, n)
	}

	r, stderr, code = runBrokerJSON(t, append([]string{"consume"}, common...)...)
	if code != 0 || r.Mode != "consume" || r.Records != 30011 || r.Bytes != 30011*64 || r.Partitions != 4 || r.RecordsPerSec <= 0 {
		t.Errorf("consume: exit %d, report %+v\n%s", code, r, stderr)
	}
	// Three clients over four partitions; more clients than partitions.
	for _, nc := range []string{"3", "9"} {
		r, stderr, code = runBrokerJSON(t, append([]string{"consume"}, append(common, "--consumers", nc)...)...)
		if code != 0 || r.Records != 30011 || r.Bytes != 30011*64 {
			t.Errorf("consume --consumers %s: exit %d, report %+v\n%s", nc, code, r, stderr)
		}
	}
	r, stderr, code = runBrokerJSON(t, append([]string{"consume"}, append(common, "--records", "1000")...)...)
	if code != 0 || r.Records < 1000 || r.Records > 30011 {
		t.Errorf("consume --records 1000: exit %d, report %+v\n%s", code, r, stderr)
	}
	if _, stderr, code = runBrokerJSON(t, append([]string{"consume"}, append(common, "--records", "30012")...)...); code != 1 || !strings.Contains(stderr, "holds 30011 records") {
		t.Errorf("consume more than there is: exit %d\n%s", code, stderr)
	}

	r, stderr, code = runBrokerJSON(t, append([]string{"e2e"}, append(common, "--records", "300")...)...)
	if code != 0 || r.Mode != "e2e" || r.Records != 300 || r.Errors != 0 {
		t.Errorf("e2e: exit %d, report %+v\n%s", code, r, stderr)
	}
	checkLatencies(t, "e2e", r)
	r, stderr, code = runBrokerJSON(t, append([]string{"e2e"}, append(common, "--records", "600", "--rate", "3000", "--acks", "-1")...)...)
	if code != 0 || r.Records != 600 || r.Seconds < 0.19 {
		t.Errorf("e2e --rate 3000: exit %d, report %+v (600 records at 3000/s take at least 0.2s)\n%s", code, r, stderr)
	}
	checkLatencies(t, "e2e --rate", r)
	if _, n := topicState(t, addr, topic); n != 30911 {
		t.Errorf("after e2e the broker holds %d records, want 30911", n)
	}
}

func TestBrokerBenchKfake(t *testing.T) {
	_, addr := startKfake(t)
	brokerScenario(t, addr)

	// The table output.
	var out, errb bytes.Buffer
	if code := benchBroker([]string{"produce", "--brokers", addr, "--topic", "table", "--records", "1000"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\n%s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "mode ") || !strings.HasPrefix(lines[2], "produce ") || !strings.Contains(lines[2], " 1000 ") {
		t.Errorf("table output:\n%s", out.String())
	}
	// The payload is what kafka-producer-perf-test sends: uppercase letters.
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics("table"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs := cl.PollRecords(ctx, 10)
	if fs.NumRecords() == 0 {
		t.Fatalf("no records read back: %v", fs.Errors())
	}
	fs.EachRecord(func(r *kgo.Record) {
		if len(r.Value) != 100 || r.Key != nil || strings.Trim(string(r.Value), "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "" {
			t.Errorf("record %q / %q, want a null key and 100 uppercase letters", r.Key, r.Value)
		}
	})
}

// A missing topic is an error for consume; produce and e2e create it.
func TestBrokerBenchMissingTopic(t *testing.T) {
	_, addr := startKfake(t)
	_, stderr, code := runBrokerJSON(t, "consume", "--brokers", addr, "--topic", "nope")
	if code != 1 || !strings.Contains(stderr, "topic nope does not exist") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d\n%s", code, stderr)
	}
}

// A broker that refuses every produce: the run stops, reports the errors
// and exits 1.
func TestBrokerBenchProduceErrors(t *testing.T) {
	c, addr := startKfake(t, kfake.SeedTopics(2, "t"))
	c.ControlKey(0, func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.ProduceRequest)
		resp := req.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID // v13+ names topics by ID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = 87 // INVALID_RECORD: not retried
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	start := time.Now()
	r, stderr, code := runBrokerJSON(t, "produce", "--brokers", addr, "--topic", "t", "--records", "100000")
	if code != 1 || !strings.Contains(stderr, "records failed") || !strings.Contains(stderr, "INVALID_RECORD") || r.Errors == 0 || r.Records != 0 {
		t.Errorf("exit %d, report %+v\n%s", code, r, stderr)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v: the run should stop at the first errors", took)
	}
}

// TestBrokerBenchLive runs the scenario against a real Kafka endpoint, e.g.
// HERD_KAFKA_BROKERS=127.0.0.1:9092 (a herd broker or Apache Kafka).
func TestBrokerBenchLive(t *testing.T) {
	s := os.Getenv("HERD_KAFKA_BROKERS")
	if s == "" {
		t.Skip("set HERD_KAFKA_BROKERS=host:port,... to run against a live Kafka-compatible broker")
	}
	brokerScenario(t, s)
}

func TestBenchBrokerGodebug(t *testing.T) {
	for _, c := range []struct {
		cur, want string
		reexec    bool
	}{
		{"", "madvdontneed=0", true},
		{"gctrace=1", "gctrace=1,madvdontneed=0", true},
		{"madvdontneed=1", "madvdontneed=1", false},
		{"gctrace=1, madvdontneed=0", "gctrace=1, madvdontneed=0", false},
		{"xmadvdontneed=1", "xmadvdontneed=1,madvdontneed=0", true},
	} {
		got, reexec := benchBrokerGodebug(c.cur)
		if got != c.want || reexec != c.reexec {
			t.Errorf("benchBrokerGodebug(%q) = %q, %v; want %q, %v", c.cur, got, reexec, c.want, c.reexec)
		}
	}
}

// TestBenchBrokerReexec runs this test binary as herd (TestMain) with
// `bench broker produce` against a closed port: it must start again with
// madvdontneed=0 and then fail as it would have, once; other subcommands,
// and a GODEBUG that sets madvdontneed, run as they are.
func TestBenchBrokerReexec(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(godebug string, args ...string) (string, int) {
		cmd := exec.Command(exe, args...)
		cmd.Env = append(os.Environ(), runAsHerd+"=1", "GODEBUG="+godebug)
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	closed := "127.0.0.1:1"
	out, code := run("", "bench", "broker", "produce", "--brokers", closed, "--connect-timeout", "2s")
	if want := "started with GODEBUG=\"\"\nstarted with GODEBUG=\"madvdontneed=0\"\n"; !strings.HasPrefix(out, want) || code != 1 ||
		!strings.Contains(out, "connection refused") {
		t.Errorf("bench broker produce: exit %d, output:\n%s\nwant exit 1 after lines\n%s", code, out, want)
	}
	out, code = run("madvdontneed=1", "bench", "broker", "consume", "--brokers", closed, "--connect-timeout", "2s")
	if want := "started with GODEBUG=\"madvdontneed=1\"\nherd bench broker"; !strings.HasPrefix(out, want) || code != 1 {
		t.Errorf("bench broker consume with madvdontneed=1: exit %d, output:\n%s\nwant exit 1 and a start like\n%s", code, out, want)
	}
	out, code = run("", "bench", "nothing")
	if want := "started with GODEBUG=\"\"\nherd bench: unknown target"; !strings.HasPrefix(out, want) || code != 2 {
		t.Errorf("bench nothing: exit %d, output:\n%s\nwant exit 2 and a start like\n%s", code, out, want)
	}
}
