package broker

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestEncodeFetchResponse checks the hand-written, vectored Fetch response
// encoder against kmsg's, for every served version.
func TestEncodeFetchResponse(t *testing.T) {
	big := bytes.Repeat([]byte{7}, copyRecordsBelow+5)
	small := []byte{1, 2, 3}
	cases := [][]fetchOut{
		nil,
		{{topic: "a", partition: 0, hw: 5, logStart: 0}},
		{
			{topic: "a", partition: 0, hw: 10, logStart: 2, records: small},
			{topic: "a", partition: 3, errCode: 6, hw: -1, logStart: -1},
			{topic: "bb", partition: 1, hw: 1 << 40, logStart: 7, records: big},
			{topic: "bb", partition: 2, hw: 3, logStart: 1, records: big[:copyRecordsBelow]},
			{topic: "c", partition: 9, hw: 3, logStart: 1, records: small},
			{topic: "a", partition: 1, hw: 3, logStart: 1, records: big},
		},
	}
	for v := int16(4); v <= 11; v++ {
		for ci, parts := range cases {
			resp := kmsg.NewPtrFetchResponse()
			resp.Version = v
			for _, o := range parts {
				if len(resp.Topics) == 0 || resp.Topics[len(resp.Topics)-1].Topic != o.topic {
					resp.Topics = append(resp.Topics, kmsg.FetchResponseTopic{Topic: o.topic})
				}
				rt := &resp.Topics[len(resp.Topics)-1]
				sp := kmsg.NewFetchResponseTopicPartition()
				sp.Partition, sp.ErrorCode = o.partition, o.errCode
				sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = o.hw, o.hw, o.logStart
				sp.PreferredReadReplica = -1
				sp.RecordBatches = append([]byte{}, o.records...)
				rt.Partitions = append(rt.Partitions, sp)
			}
			want := resp.AppendTo(make([]byte, 8))
			binary.BigEndian.PutUint32(want, uint32(len(want)-4))
			binary.BigEndian.PutUint32(want[4:], 42)
			vec := encodeFetchResponse(42, v, parts, copyRecordsBelow)
			got := bytes.Join(vec, nil)
			if !bytes.Equal(got, want) {
				t.Fatalf("v%d case %d: encodings differ\ngot  %x\nwant %x", v, ci, got[:min(len(got), 200)], want[:min(len(want), 200)])
			}
			for _, p := range vec {
				if len(p) == 0 {
					t.Fatalf("v%d case %d: empty piece", v, ci)
				}
			}
			if ci == 2 && len(vec) != 6 {
				t.Fatalf("v%d: %d pieces, want 6 (large record sets not copied)", v, len(vec))
			}
		}
	}
}

// TestFetchBudgetPacesReads: a fetch of many partitions with much data
// behind each reads about MaxBytes, not PartitionMaxBytes of every
// partition (which would hold partitions x 1 MiB in memory per fetch), and
// still answers every partition, in order, with whole batches.
func TestFetchBudgetPacesReads(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		const parts = 30
		createTopic(t, h, c, "t", parts)
		big := strings.Repeat("x", 5000)
		one := len(batch(1, big))
		for p := int32(0); p < parts; p++ {
			for i := 0; i < 8; i++ {
				h.call(c, produceReq(1, "t", p, batch(1, big)))
			}
		}
		f := fetchReq("t", 0, 0, 1, 0)
		rp := f.Topics[0].Partitions[0]
		f.Topics[0].Partitions = nil
		for p := int32(0); p < parts; p++ {
			rp.Partition = p
			f.Topics[0].Partitions = append(f.Topics[0].Partitions, rp)
		}
		f.MaxBytes = int32(20 * one)
		before := h.readBytes
		fr := h.call(c, f).(*kmsg.FetchResponse)
		read := h.readBytes - before
		got := 0
		for i, sp := range fr.Topics[0].Partitions {
			if sp.Partition != int32(i) || sp.ErrorCode != 0 || sp.HighWatermark != 8 || sp.LogStartOffset != 0 {
				t.Fatalf("partition %d: %+v", i, sp)
			}
			want := 0
			switch i {
			case 0, 1:
				want = 8 * one
			case 2:
				want = 4 * one
			}
			if len(sp.RecordBatches) != want {
				t.Fatalf("partition %d: %d bytes, want %d", i, len(sp.RecordBatches), want)
			}
			got += len(sp.RecordBatches)
		}
		if got != 20*one {
			t.Fatalf("%d bytes fetched, want %d", got, 20*one)
		}
		// The stand-in store reads nothing from disk; partlog reads a little
		// around each range (index interval, batch headers).
		if read > int64(3*f.MaxBytes) {
			t.Fatalf("the fetch read %d bytes from disk for a %d-byte response", read, f.MaxBytes)
		}
		t.Logf("read %d bytes for a %d-byte response", read, got)
	})
}

// TestFetchWakeupDuringRead: data that becomes readable while a fetch's
// first read is in flight (before the fetch waits for a high watermark
// notice) still answers the fetch at once, not at its deadline.
func TestFetchWakeupDuringRead(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 1)
		consumer := h.connect()
		// The produce's write is submitted first and completes after the
		// fetch has started reading at the old high watermark.
		h.send(c, produceReq(1, "t", 0, batch(5, "hello")))
		f := fetchReq("t", 0, 0, 1, 5000)
		h.send(consumer, f)
		h.settle()
		rs := h.replies(consumer, f)
		if len(rs) != 1 {
			t.Fatal("the fetch waits although its data was appended")
		}
		if fp := rs[0].resp.(*kmsg.FetchResponse).Topics[0].Partitions[0]; fp.HighWatermark != 1 || len(fp.RecordBatches) == 0 {
			t.Fatalf("fetch: %+v", fp)
		}
	})
}
