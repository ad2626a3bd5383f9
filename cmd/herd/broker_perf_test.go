package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestBrokerMemoryLoad drives a running broker (any Kafka endpoint) with a
// produce and a consume load over many partitions and samples the broker
// process's resident memory, for the "RSS must not grow with data stored"
// check. It only runs when HERD_MEMLOAD_ADDR names the broker:
//
//	HERD_MEMLOAD_ADDR=127.0.0.1:9092   the broker
//	HERD_MEMLOAD_PID=1234              its process, for RSS (optional)
//	HERD_MEMLOAD_TOPICS=10             topics, created if missing
//	HERD_MEMLOAD_PARTITIONS=100        partitions per topic
//	HERD_MEMLOAD_DURATION=60s          how long to load it
//	HERD_MEMLOAD_SIZE=100              record value bytes
//	HERD_MEMLOAD_CONSUME=1             also consume everything (0: produce only)
//
// Every sample is logged (t -v): elapsed, records produced and consumed,
// broker RSS.
func TestBrokerMemoryLoad(t *testing.T) {
	addr := os.Getenv("HERD_MEMLOAD_ADDR")
	if addr == "" {
		t.Skip("set HERD_MEMLOAD_ADDR")
	}
	env := func(k string, def int) int {
		if v := os.Getenv(k); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s=%q", k, v)
			}
			return n
		}
		return def
	}
	pid := env("HERD_MEMLOAD_PID", 0)
	topics := env("HERD_MEMLOAD_TOPICS", 10)
	parts := env("HERD_MEMLOAD_PARTITIONS", 100)
	size := env("HERD_MEMLOAD_SIZE", 100)
	consume := env("HERD_MEMLOAD_CONSUME", 1) != 0
	dur := time.Minute
	if v := os.Getenv("HERD_MEMLOAD_DURATION"); v != "" {
		var err error
		if dur, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	var names []string
	for i := 0; i < topics; i++ {
		names = append(names, fmt.Sprintf("mem-%d", i))
	}
	admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	req := kmsg.NewPtrCreateTopicsRequest()
	for _, n := range names {
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = n, int32(parts), 1
		req.Topics = append(req.Topics, rt)
	}
	req.TimeoutMillis = 60_000
	if _, err := req.RequestWith(ctx, admin); err != nil {
		t.Fatal(err)
	}

	prod, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite(),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxProduceRequestsInflightPerBroker(5),
		kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(200_000), kgo.ProduceRequestTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	var cons *kgo.Client
	if consume {
		if cons, err = kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(names...),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(50<<20)); err != nil {
			t.Fatal(err)
		}
		defer cons.Close()
	}

	lctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	var produced, consumed, errs atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		value := make([]byte, size)
		for i := 0; lctx.Err() == nil; i++ {
			prod.Produce(lctx, &kgo.Record{Topic: names[i%len(names)], Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					// Records the load's own deadline cut off (the one
					// Produce was blocked on, and any kgo had buffered
					// but not yet sent, which it fails with the
					// record's context) are not the broker's errors.
					if !(errors.Is(err, context.DeadlineExceeded) && lctx.Err() != nil) {
						errs.Add(1)
					}
					return
				}
				produced.Add(1)
			})
		}
	}()
	if consume {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lctx.Err() == nil {
				fs := cons.PollFetches(lctx)
				fs.EachRecord(func(*kgo.Record) { consumed.Add(1) })
			}
		}()
	}
	start := time.Now()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	sample := func() {
		t.Logf("t=%5.1fs produced=%d consumed=%d errors=%d broker %s", time.Since(start).Seconds(),
			produced.Load(), consumed.Load(), errs.Load(), procMem(pid))
	}
	sample()
	for lctx.Err() == nil {
		select {
		case <-tick.C:
			sample()
		case <-lctx.Done():
		}
	}
	wg.Wait()
	sample()
	if n := errs.Load(); n > 0 {
		t.Errorf("%d records failed", n)
	}
}

// procMem reads a process's VmRSS and VmHWM.
func procMem(pid int) string {
	if pid == 0 {
		return "(no pid)"
	}
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") {
			out = append(out, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(out, " ")
}

// TestBrokerProduceKgoDefaults produces to a running broker with kgo's
// default producer settings (acks=all, idempotent writes if the broker
// grants a producer id, one request in flight otherwise, linger 10ms) and
// logs records/s, to compare brokers as an unconfigured client sees them.
// HERD_PRODUCE_ADDR names the broker; HERD_PRODUCE_RECORDS (3000000) and
// HERD_PRODUCE_SIZE (100) the load.
func TestBrokerProduceKgoDefaults(t *testing.T) {
	addr := os.Getenv("HERD_PRODUCE_ADDR")
	if addr == "" {
		t.Skip("set HERD_PRODUCE_ADDR")
	}
	n, size := 3_000_000, 100
	if v, err := strconv.Atoi(os.Getenv("HERD_PRODUCE_RECORDS")); err == nil {
		n = v
	}
	if v, err := strconv.Atoi(os.Getenv("HERD_PRODUCE_SIZE")); err == nil {
		size = v
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.DefaultProduceTopic("kgo-defaults"), kgo.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("warm")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	value := make([]byte, size)
	var errs atomic.Int64
	start := time.Now()
	for i := 0; i < n; i++ {
		cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			if err != nil {
				errs.Add(1)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if errs.Load() > 0 {
		t.Fatalf("%d produce errors", errs.Load())
	}
	t.Logf("%d records of %d B with kgo defaults in %v: %.0f records/s", n, size, el, float64(n)/el.Seconds())
}
