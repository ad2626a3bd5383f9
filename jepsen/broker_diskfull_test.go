package jepsen

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"herd/compat/kafka/broker"
)

// TestBrokerDiskFull produces 1-KiB records to a `herd broker` whose log
// directory is a 12 MiB tmpfs (in a mount namespace of the test's own)
// until it is full. The broker must stop with a clear message, as Kafka
// does when its only log directory fails; given room again and restarted,
// it must recover the partition, whose last write the full disk may have
// cut short, and take the producer's retries. Every acknowledged record
// must then be at the offset its acknowledgement named, offsets dense.
func TestBrokerDiskFull(t *testing.T) {
	if !inNamespaces(t) {
		return
	}
	dir := t.TempDir()

	resize := mountTmpfs(t, dir, "12m")
	// The output goes to the test's tail buffer only: a log file on the
	// full tmpfs would fail with it.
	b, err := broker.Start(broker.Herd, broker.Options{Bin: herdBin, Dir: dir, Partitions: 1, AutoCreate: true, Log: io.Discard,
		Extra: map[string]string{"log.segment.bytes": fmt.Sprint(4 << 20)}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()

	const topic = "full"
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	prod, acked := startKiBProducer(ctx, t, b.Addr, topic)
	acks := acked.offsets

	deadline := time.Now().Add(30 * time.Second)
	for !b.Exited() {
		if time.Now().After(deadline) {
			prod.stop()
			t.Fatalf("the broker still runs 30 s into filling its 12 MiB log directory:\n%s", b.LogTail(20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	why := diskFullLine(b.LogTail(20))
	if why == "" {
		prod.stop()
		t.Fatalf("the broker stopped without saying its disk is full:\n%s", b.LogTail(20))
	}
	before := prod.count(acked)
	resize("256m")
	if err := b.Restart(); err != nil {
		prod.stop()
		t.Fatal(err)
	}
	// Enough after the restart to show it takes writes, and stop well
	// before the larger tmpfs fills too (the producer writes about 250 MB/s).
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if prod.count(acked) >= before+2000 {
			break
		}
	}
	produced := prod.stop()
	if len(acks) <= before {
		t.Fatalf("nothing acknowledged after the restart (%d before, %d failed)", before, acked.failed)
	}

	end := int64(0)
	for _, off := range acks {
		end = max(end, off+1)
	}
	c := newClient(t, b.Addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(0)}}))
	got := make([]string, 0, end)
	for int64(len(got)) < end && ctx.Err() == nil {
		fs := c.PollFetches(ctx)
		if err := fs.Err0(); err != nil && ctx.Err() == nil {
			t.Fatalf("fetch from %d: %v", len(got), err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset != int64(len(got)) {
				t.Fatalf("record at offset %d after %d records: offsets are not dense", r.Offset, len(got))
			}
			got = append(got, string(r.Key))
		})
	}
	for k, off := range acks {
		if off >= int64(len(got)) || got[off] != k {
			t.Fatalf("acknowledged %s at offset %d, which the restarted broker does not hold (it holds %d records; %d acknowledged before it stopped, %d in all, end %d)\n%s", k, off, len(got), before, len(acks), end, b.LogTail(30))
		}
	}
	t.Logf("the broker stopped after %d acknowledged records: %s", before, why)
	t.Logf("%d of %d records acknowledged in all (%d failed), all read back at their offsets after the restart", len(acks), produced, acked.failed)
}
