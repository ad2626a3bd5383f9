package broker

import (
	"context"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/disk"
	"herd/node"
	"herd/node/shell"
)

// shellBroker runs the core in the production shell on 127.0.0.1:0.
type shellBroker struct {
	addr string
	stop func()
}

func startShellBroker(t *testing.T, open openDirFunc, fs disk.FS) *shellBroker {
	t.Helper()
	cfg := testConfig()
	cfg.Listeners = []Listener{{Name: "PLAINTEXT", Host: "127.0.0.1", Port: 0}}
	var logw io.Writer
	if testing.Verbose() && os.Getenv("BROKER_LOG") != "" {
		logw = os.Stderr
	}
	factory := func(env node.Env) node.Machine { return newFactory(cfg, open)(env) }
	sh, err := shell.New(shell.Config{Name: "broker", FS: fs, Listen: []string{cfg.Listeners[0].Addr()}, Log: logw}, factory)
	if err != nil {
		t.Fatal(err)
	}
	addr := sh.Addrs()[0]
	_, port, _ := splitHostPort(addr)
	fmt.Sscan(port, &cfg.Listeners[0].Port)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sh.Run(ctx) }()
	return &shellBroker{addr: addr, stop: func() {
		closed := make(chan error, 1)
		if err := sh.Do(func(m node.Machine) { m.(*Broker).Shutdown(func(err error) { closed <- err }) }); err == nil {
			if err := <-closed; err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shell: %v", err)
		}
	}}
}

// TestKgoEndToEnd runs franz-go's client against the core in the shell.
func TestKgoEndToEnd(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		b := startShellBroker(t, open, disk.NewSimFS())
		defer b.stop()
		KgoScenario(t, b.addr, "e2e")
	})
}

// KgoScenario creates a topic, produces with several codecs, acks levels,
// keys and headers, consumes everything back, lists offsets by time and
// returns the records produced (topic left in place).
func KgoScenario(t *testing.T, addr, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	admin, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	cr := kmsg.NewPtrCreateTopicsRequest()
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, 3, 1
	cr.Topics = append(cr.Topics, rt)
	cresp, err := cr.RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := kerr.ErrorForCode(cresp.Topics[0].ErrorCode); err != nil {
		t.Fatalf("create: %v", err)
	}

	var produced []*kgo.Record
	codecs := []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()}
	start := time.Now()
	for ci, codec := range codecs {
		opts := []kgo.Opt{kgo.SeedBrokers(addr), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(codec)}
		if ci%2 == 1 {
			opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
		}
		p, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		var batch []*kgo.Record
		for i := 0; i < 200; i++ {
			batch = append(batch, &kgo.Record{
				Key:     []byte(fmt.Sprintf("key-%d", i%17)),
				Value:   []byte(fmt.Sprintf("codec %d value %d %s", ci, i, "padding padding padding padding")),
				Headers: []kgo.RecordHeader{{Key: "h", Value: []byte(fmt.Sprint(i))}},
			})
		}
		if err := p.ProduceSync(ctx, batch...).FirstErr(); err != nil {
			p.Close()
			t.Fatalf("produce with codec %d: %v", ci, err)
		}
		p.Close()
		produced = append(produced, batch...)
	}

	checkConsume(t, ctx, addr, topic, produced)

	// ListOffsets by time: a time before everything gives each
	// partition's first offset, a time in the future -1.
	lo := kmsg.NewPtrListOffsetsRequest()
	lt := kmsg.NewListOffsetsRequestTopic()
	lt.Topic = topic
	for p := int32(0); p < 3; p++ {
		lp := kmsg.NewListOffsetsRequestTopicPartition()
		lp.Partition, lp.Timestamp = p, start.Add(-time.Hour).UnixMilli()
		lt.Partitions = append(lt.Partitions, lp)
		lp.Timestamp = time.Now().Add(time.Hour).UnixMilli()
		lt.Partitions = append(lt.Partitions, lp)
	}
	lo.Topics = append(lo.Topics, lt)
	lresp, err := lo.RequestWith(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	for i, lp := range lresp.Topics[0].Partitions {
		want := int64(0)
		if i%2 == 1 {
			want = -1
		}
		if lp.ErrorCode != 0 || lp.Offset != want {
			t.Errorf("ListOffsets partition %d (query %d): offset %d, %v; want %d", lp.Partition, i, lp.Offset, kerr.ErrorForCode(lp.ErrorCode), want)
		}
	}
	return produced
}

// checkConsume reads the topic from the start and compares with want.
func checkConsume(t *testing.T, ctx context.Context, addr, topic string, want []*kgo.Record) {
	t.Helper()
	c, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	byValue := map[string]*kgo.Record{}
	for _, r := range want {
		byValue[string(r.Value)] = r
	}
	seen := map[string]bool{}
	next := map[int32]int64{}
	for len(seen) < len(want) {
		fs := c.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before timing out", len(seen), len(want))
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s-%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			w := byValue[string(r.Value)]
			if w == nil || seen[string(r.Value)] {
				t.Fatalf("unexpected or duplicate record %q at %d-%d", r.Value, r.Partition, r.Offset)
			}
			seen[string(r.Value)] = true
			if string(r.Key) != string(w.Key) || len(r.Headers) != 1 || string(r.Headers[0].Value) != string(w.Headers[0].Value) {
				t.Fatalf("record %q: key %q headers %v", r.Value, r.Key, r.Headers)
			}
			if r.Partition != w.Partition || r.Offset != w.Offset {
				t.Fatalf("record %q at %d-%d, produced at %d-%d", r.Value, r.Partition, r.Offset, w.Partition, w.Offset)
			}
			if r.Offset != next[r.Partition] {
				t.Fatalf("partition %d: offset %d after %d", r.Partition, r.Offset, next[r.Partition]-1)
			}
			next[r.Partition] = r.Offset + 1
		})
	}
}
