package jepsen

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"herd/compat/kafka/broker"
)

// TestBrokerRetentionSurvivesKill9 produces 1-KiB records to a `herd broker`
// whose retention deletes 6 MiB segments as fast as they fill (retention.bytes
// 12 MiB, every append fsynced), while the broker is
// killed with SIGKILL and restarted four times and a reader polls the log
// start offset (ListOffsets earliest). The log start it saw must never go
// back, across every kill; at the end every acknowledged record at or above
// the log start must be at its offset with its value, offsets dense from the
// start; and the deleted segments' files, which the trash empties 4 MiB at a
// time (node/trash) and which a restart hands back to it, must all be gone
// from the disk soon after.
func TestBrokerRetentionSurvivesKill9(t *testing.T) {
	b, err := broker.Start(broker.Herd, broker.Options{Bin: herdBin, Partitions: 1, AutoCreate: true,
		Extra: map[string]string{
			"log.flush.interval.messages": "1",
			"log.segment.bytes":           fmt.Sprint(6 << 20),
			"log.retention.bytes":         fmt.Sprint(12 << 20),
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()

	const topic = "retained"
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	prod, acked := startKiBProducer(ctx, t, b.Addr, topic)
	acks := acked.offsets

	// The reader: the log start it saw, in order, must never go back.
	adm := kadm.NewClient(newClient(t, b.Addr))
	var starts []int64
	stopReader := make(chan struct{})
	readerDone := make(chan struct{})
	var wentBack string
	go func() {
		defer close(readerDone)
		for {
			select {
			case <-stopReader:
				return
			case <-time.After(20 * time.Millisecond):
			}
			rctx, rcancel := context.WithTimeout(ctx, time.Second)
			offs, err := adm.ListStartOffsets(rctx, topic)
			rcancel()
			if err != nil {
				continue // the broker is down or restarting
			}
			o, ok := offs.Lookup(topic, 0)
			if !ok || o.Err != nil {
				continue
			}
			if n := len(starts); n > 0 && o.Offset < starts[n-1] && wentBack == "" {
				wentBack = fmt.Sprintf("log start %d after %d was seen", o.Offset, starts[n-1])
			}
			starts = append(starts, o.Offset)
		}
	}()

	// herd checks retention once a second (its tick; it ignores
	// log.retention.check.interval.ms), so kills come 1.1-1.8 s apart: some
	// land while a deletion is under way, some while the trash empties.
	const kills = 4
	for k := range kills {
		time.Sleep(time.Duration(1100+k*230) * time.Millisecond)
		if err := b.Restart(); err != nil {
			t.Fatalf("restart %d: %v", k+1, err)
		}
	}
	time.Sleep(1500 * time.Millisecond)
	prod.stop()
	close(stopReader)
	<-readerDone
	if wentBack != "" {
		t.Fatalf("the log start went back: %s (starts seen: %v)", wentBack, compress(starts))
	}
	// Retention goes on after the last produce (a tick a second): read the
	// start again once it is done.
	time.Sleep(2500 * time.Millisecond)
	offs, err := adm.ListStartOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	o, _ := offs.Lookup(topic, 0)
	if o.Err != nil || len(starts) == 0 || o.Offset < starts[len(starts)-1] {
		t.Fatalf("final log start %d (%v), after %v were seen", o.Offset, o.Err, compress(starts))
	}
	start := o.Offset
	starts = append(starts, start)
	if start == 0 {
		t.Fatalf("retention never moved the log start (%d records acknowledged, %d failed)", len(acks), acked.failed)
	}

	// Everything acknowledged at or above the start is there, dense.
	end := int64(0)
	for _, off := range acks {
		end = max(end, off+1)
	}
	c := newClient(t, b.Addr, kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: {0: kgo.NewOffset().At(start)}}))
	got := map[int64]string{}
	next := start
	for next < end && ctx.Err() == nil {
		fs := c.PollFetches(ctx)
		if err := fs.Err0(); err != nil && ctx.Err() == nil {
			t.Fatalf("fetch from %d: %v", next, err)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset != next {
				t.Fatalf("record at offset %d, expected %d: offsets not dense", r.Offset, next)
			}
			got[r.Offset] = string(r.Key)
			next++
		})
	}
	c.Close()
	checked := 0
	for v, off := range acks {
		if off < start {
			continue
		}
		if got[off] != v {
			t.Fatalf("acknowledged %s at offset %d (log start %d), which holds %q", v, off, start, got[off])
		}
		checked++
	}

	// The trash empties what retention deleted, and what the kills left.
	logs := filepath.Join(b.Dir, "logs")
	var left []string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		left = deletedFiles(t, logs)
		if len(left) == 0 {
			break
		}
	}
	if len(left) > 0 {
		t.Fatalf("deleted segments still on disk 15 s later: %v", left)
	}
	t.Logf("%d records acknowledged (%d failed), %d at or above the final log start %d read back; %d log starts seen, never going back: %v",
		len(acks), acked.failed, checked, start, len(starts), compress(starts))
}

// deletedFiles lists files on their way out under the broker's log dir.
func deletedFiles(t *testing.T, logs string) []string {
	var out []string
	err := filepath.WalkDir(logs, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return nil // removed while we walked
		}
		if strings.HasSuffix(path, ".deleted") || strings.HasSuffix(path, "-delete") {
			out = append(out, strings.TrimPrefix(path, logs+"/"))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// compress shows a run of log starts without its repeats.
func compress(xs []int64) []int64 {
	var out []int64
	for _, x := range xs {
		if len(out) == 0 || out[len(out)-1] != x {
			out = append(out, x)
		}
	}
	return out
}
