package jepsen

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"herd/compat/kafka/broker"
)

// TestBrokerAckedRecordsSurviveKill9 produces to a `herd broker` from a kgo
// producer while the broker is killed with SIGKILL and restarted three
// times, then reads every partition back. Every acknowledged record must be
// at the offset its acknowledgement named, with its value; offsets must be
// dense from 0; a value may appear twice only as a retry of a produce whose
// answer was lost. It runs with flush.messages=1 (acknowledged means
// fsynced) and with Kafka's default flush policy (never by count or time):
// a killed process leaves its writes in the page cache, so an acknowledged
// record must survive SIGKILL without any fsync too, as it does in Kafka.
// (Power loss, which the page cache does not survive, is the simulator's.)
func TestBrokerAckedRecordsSurviveKill9(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]string
	}{
		{"flush-every-message", map[string]string{"flush.messages": "1"}},
		{"default-flush", nil},
	} {
		t.Run(tc.name, func(t *testing.T) { brokerKill9(t, tc.extra) })
	}
}

func brokerKill9(t *testing.T, extra map[string]string) {
	b, err := broker.Start(broker.Herd, broker.Options{Bin: herdBin, Partitions: 3, AutoCreate: true,
		Extra: extra})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()

	const topic = "kill9"

	type acked struct {
		partition int32
		offset    int64
	}
	acks := map[string]acked{} // value -> where its acknowledgement put it
	var failed int
	var firstErr error
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prod := startProducer(ctx, t, b.Addr, topic, func(i int) *kgo.Record {
		v := []byte(fmt.Sprintf("v%07d", i))
		return &kgo.Record{Key: v, Value: v}
	}, func(r *kgo.Record, err error) {
		if err != nil {
			if failed++; firstErr == nil {
				firstErr = err
			}
			return
		}
		acks[string(r.Value)] = acked{r.Partition, r.Offset}
	})
	const kills = 3
	for k := range kills {
		time.Sleep(400 * time.Millisecond) // kill with produce requests in flight
		if err := b.Restart(); err != nil {
			t.Fatalf("restart %d: %v", k+1, err)
		}
	}
	time.Sleep(400 * time.Millisecond)
	produced := prod.stop()
	if len(acks) < produced/2 || len(acks) < 1000 {
		t.Fatalf("only %d of %d records acknowledged (%d failed, the first with %v): too little to check", len(acks), produced, failed, firstErr)
	}

	// Read every partition from offset 0 to its end.
	ends := map[int32]int64{}
	for _, a := range acks {
		ends[a.partition] = max(ends[a.partition], a.offset+1)
	}
	got := map[int32][]string{}
	for p, end := range ends {
		c, err := kgo.NewClient(kgo.SeedBrokers(b.Addr),
			kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {p: kgo.NewOffset().At(0)}}))
		if err != nil {
			t.Fatal(err)
		}
		for int64(len(got[p])) < end && ctx.Err() == nil {
			fs := c.PollFetches(ctx)
			if err := fs.Err0(); err != nil && ctx.Err() == nil {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if r.Offset != int64(len(got[p])) {
					t.Fatalf("%s/%d: record at offset %d after %d records: offsets are not dense", topic, p, r.Offset, len(got[p]))
				}
				got[p] = append(got[p], string(r.Value))
			})
		}
		c.Close()
	}
	seen := map[string]int{}
	for _, vs := range got {
		for _, v := range vs {
			seen[v]++
		}
	}
	dups := 0
	for v, a := range acks {
		vs := got[a.partition]
		if a.offset >= int64(len(vs)) {
			t.Fatalf("acknowledged %s at %s/%d offset %d, but the partition ends at %d", v, topic, a.partition, a.offset, len(vs))
		}
		if vs[a.offset] != v {
			t.Fatalf("acknowledged %s at %s/%d offset %d, which holds %s", v, topic, a.partition, a.offset, vs[a.offset])
		}
		if seen[v] > 1 {
			dups++
		}
	}
	t.Logf("%d of %d records acknowledged (%d failed), all read back at their offsets; %d appear twice (retries of produces whose answer the kill lost)",
		len(acks), produced, failed, dups)
}

// producer produces the records rec(0), rec(1), ... to topic from a
// goroutine of its own until stopped, through a kgo client that waits out
// kills (acks=all, no idempotence, a minute of retries); done gets each
// outcome, one at a time.
type producer struct {
	mu       sync.Mutex
	wg       sync.WaitGroup
	halt     chan struct{}
	finished chan struct{}
	produced int
}

func startProducer(ctx context.Context, t *testing.T, addr, topic string, rec func(i int) *kgo.Record, done func(r *kgo.Record, err error)) *producer {
	cl := newClient(t, addr, kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.DisableIdempotentWrite(),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.RecordRetries(1000),
		kgo.RetryTimeout(time.Minute), kgo.ProducerLinger(time.Millisecond), kgo.AllowAutoTopicCreation())
	p := &producer{halt: make(chan struct{}), finished: make(chan struct{})}
	go func() {
		defer close(p.finished)
		for ; ; p.produced++ {
			select {
			case <-p.halt:
				return
			default:
			}
			p.wg.Add(1)
			cl.Produce(ctx, rec(p.produced), func(r *kgo.Record, err error) {
				defer p.wg.Done()
				p.mu.Lock()
				defer p.mu.Unlock()
				done(r, err)
			})
		}
	}()
	return p
}

// acked is what a producer of keyed records was told: the offset each
// key's acknowledgement named, and how many records failed. The producer's
// mu guards it while the producer runs.
type acked struct {
	offsets map[string]int64
	failed  int
}

// startKiBProducer produces records of about 1 KiB keyed v0000000,
// v0000001, ... (the key also begins the value) and records what each
// acknowledgement said.
func startKiBProducer(ctx context.Context, t *testing.T, addr, topic string) (*producer, *acked) {
	a := &acked{offsets: map[string]int64{}}
	pad := bytes.Repeat([]byte("x"), 1000)
	p := startProducer(ctx, t, addr, topic, func(i int) *kgo.Record {
		k := []byte(fmt.Sprintf("v%07d", i))
		return &kgo.Record{Key: k, Value: append(k, pad...)}
	}, func(r *kgo.Record, err error) {
		if err != nil {
			a.failed++
			return
		}
		a.offsets[string(r.Key)] = r.Offset
	})
	return p, a
}

// count is how many records a says were acknowledged so far, read while p
// may still be producing.
func (p *producer) count(a *acked) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(a.offsets)
}

// stop ends the producing, waits for every outcome and returns how many
// records were handed to the client.
func (p *producer) stop() int {
	close(p.halt)
	<-p.finished
	p.wg.Wait()
	return p.produced
}

// newClient is a kgo client with opts, closed with the test.
func newClient(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	c, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}
