package raft

import (
	"bytes"
	"fmt"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// genSegment draws a segment of batches with random entries and returns its
// bytes, the start offset of each batch, and the records per batch.
func genSegment(t *rapid.T) (data []byte, starts []int, perBatch [][]record) {
	nb := rapid.IntRange(1, 6).Draw(t, "batches")
	idx := Index(1)
	for b := range nb {
		var recs []byte
		var want []record
		if b == 0 {
			s := segmentInfo{Seq: 3, FirstIndex: 1}
			recs = appendSegmentRec(recs, s)
			want = append(want, record{seg: &s})
		}
		if rapid.Bool().Draw(t, "state") {
			h := hardState{Term: Term(rapid.Uint32().Draw(t, "term")), Vote: ID(rapid.IntRange(0, 5).Draw(t, "vote")), Abstain: rapid.Bool().Draw(t, "abstain")}
			recs = appendStateRec(recs, h)
			want = append(want, record{state: &h})
		}
		for range rapid.IntRange(0, 8).Draw(t, "entries") {
			e := Entry{Index: idx, Term: 2, Zxid: MakeZxid(2, uint32(idx)), Type: EntryNormal,
				Data: rapid.SliceOfN(rapid.Byte(), 0, 1500).Draw(t, "data")}
			idx++
			recs = appendEntryRec(recs, &e)
			want = append(want, record{entry: &e})
		}
		starts = append(starts, len(data))
		data = append(data, encodeBatch(nil, uint64(b), recs)...)
		perBatch = append(perBatch, want)
	}
	return data, starts, perBatch
}

func sameRecords(a, b []record) error {
	if len(a) != len(b) {
		return fmt.Errorf("%d records, want %d", len(a), len(b))
	}
	for i := range a {
		switch {
		case a[i].seg != nil && b[i].seg != nil && *a[i].seg == *b[i].seg:
		case a[i].state != nil && b[i].state != nil && *a[i].state == *b[i].state:
		case a[i].entry != nil && b[i].entry != nil:
			x, y := a[i].entry, b[i].entry
			if x.Index != y.Index || x.Term != y.Term || x.Zxid != y.Zxid || x.Type != y.Type || !bytes.Equal(x.Data, y.Data) {
				return fmt.Errorf("record %d: entry %v, want %v", i, x, y)
			}
		default:
			return fmt.Errorf("record %d differs", i)
		}
	}
	return nil
}

func flatten(per [][]record, n int) []record {
	var out []record
	for _, r := range per[:n] {
		out = append(out, r...)
	}
	return out
}

func TestWALRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data, _, per := genSegment(t)
		sc := scanSegment(data, 1, true)
		if sc.damaged || sc.validEnd != int64(len(data)) {
			t.Fatalf("clean segment: damaged=%v validEnd=%d of %d (%s)", sc.damaged, sc.validEnd, len(data), sc.why)
		}
		if err := sameRecords(sc.records, flatten(per, len(per))); err != nil {
			t.Fatal(err)
		}
	})
}

// A torn last batch (some sectors never written: zeros, or the file ends
// early, possibly with its size grown) is a clean torn tail: every earlier
// batch survives and nothing is reported lost.
func TestWALTornTailIsNotLoss(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data, starts, per := genSegment(t)
		last := starts[len(starts)-1]
		torn := bytes.Clone(data)
		nsec := (len(data) - last) / sectorSize
		dropped := 0
		for s := range nsec {
			if rapid.Bool().Draw(t, fmt.Sprint("drop", s)) {
				clear(torn[last+s*sectorSize : last+(s+1)*sectorSize])
				dropped++
			}
		}
		if rapid.Bool().Draw(t, "cut") {
			torn = torn[:last+rapid.IntRange(0, len(data)-last).Draw(t, "cutAt")]
		}
		sc := scanSegment(torn, 1, true)
		if sc.lossy {
			t.Fatalf("torn tail reported as loss: %s", sc.why)
		}
		kept := len(per) - 1
		if sc.validEnd > int64(last) {
			kept = len(per) // the tear happened to leave the whole batch
		}
		if err := sameRecords(sc.records, flatten(per, kept)); err != nil {
			t.Fatal(err)
		}
	})
}

// A bit flip anywhere in synced batches is either harmless (padding) or
// reported as damage that may have lost acknowledged data; records are never
// returned altered.
func TestWALCorruptionIsDetected(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		data, _, per := genSegment(t)
		bad := bytes.Clone(data)
		at := rapid.IntRange(0, len(bad)-1).Draw(t, "at")
		bad[at] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
		sc := scanSegment(bad, 1, true)
		all := flatten(per, len(per))
		if !sc.damaged {
			if err := sameRecords(sc.records, all); err != nil {
				t.Fatalf("undetected flip at %d altered records: %v", at, err)
			}
			return
		}
		if !sc.lossy {
			t.Fatalf("flip at %d in synced data classified as a torn write: %s", at, sc.why)
		}
		// Whatever was returned must be an unaltered prefix.
		if len(sc.records) > len(all) {
			t.Fatal("more records than written")
		}
		if err := sameRecords(sc.records, all[:len(sc.records)]); err != nil {
			t.Fatalf("records before the damage altered: %v", err)
		}
	})
}

// A batch from elsewhere (a misdirected write) lands in the middle: its
// sequence number gives it away, and the valid batches after it make it loss.
func TestWALMisplacedBatch(t *testing.T) {
	recs := appendStateRec(nil, hardState{Term: 9})
	var seg []byte
	for i := range 4 {
		seg = append(seg, encodeBatch(nil, uint64(i), recs)...)
	}
	b1 := physicalLen(len(recs))
	copy(seg[b1:], encodeBatch(nil, 3, recs)) // batch 3's bytes over batch 1
	sc := scanSegment(seg, 1, true)
	if !sc.damaged || !sc.lossy || sc.validEnd != int64(b1) {
		t.Fatalf("misplaced batch: damaged=%v lossy=%v end=%d (%s)", sc.damaged, sc.lossy, sc.validEnd, sc.why)
	}
	if sc := scanSegment(seg[:2*b1], 1, false); !sc.lossy {
		t.Fatal("damage in an older segment must be loss")
	}
}

func TestNames(t *testing.T) {
	seq, first, ok := parseSegmentName(segmentName(7, 123))
	if !ok || seq != 7 || first != 123 {
		t.Fatal(seq, first, ok)
	}
	if i, ok := parseSnapshotName(snapshotName(99)); !ok || i != 99 {
		t.Fatal(i, ok)
	}
	for _, bad := range []string{"wal-1-2", "snap-x", "snap-00000000000000000099.tmp"} {
		if _, _, ok := parseSegmentName(bad); ok {
			t.Error(bad)
		}
		if _, ok := parseSnapshotName(bad); ok {
			t.Error(bad)
		}
	}
}

func TestZxid(t *testing.T) {
	z := MakeZxid(5, 7)
	if z.Epoch() != 5 || z.Counter() != 7 || MakeZxid(6, 1) <= MakeZxid(5, 1<<32-1) {
		t.Fatal(z)
	}
}

// TestZeroTailOnlyCleanInNewestSegment: zeros after the last batch are a
// grown file whose data never arrived in the newest segment, but damage in
// an older one (all of whose batches were synced before the next began).
func TestZeroTailOnlyCleanInNewestSegment(t *testing.T) {
	recs := appendSegmentRec(nil, segmentInfo{Seq: 1, FirstIndex: 1})
	data := append(encodeBatch(nil, 0, recs), make([]byte, 4*sectorSize)...)
	if sc := scanSegment(data, 1, true); !sc.damaged || sc.lossy {
		t.Fatalf("newest segment with a zero tail: damaged=%v lossy=%v (%s)", sc.damaged, sc.lossy, sc.why)
	}
	if sc := scanSegment(data, 1, false); !sc.lossy {
		t.Fatalf("older segment with a zero tail not judged lossy: %+v", sc)
	}
	if sc := scanSegment(data[:len(data)-4*sectorSize], 1, false); sc.damaged {
		t.Fatalf("older segment without a tail judged damaged: %s", sc.why)
	}
}

// TestWALFill: fill after the last batch is a clean end in every segment
// (the writer extends segments ahead of their batches); a batch torn over
// fill is a torn tail; fill of another segment or another place, or zeros
// inside an older segment's fill, is damage that may hide lost batches.
func TestWALFill(t *testing.T) {
	const seq = 7
	rapid.Check(t, func(t *rapid.T) {
		data, starts, per := genSegment(t)
		end := len(data)
		fillTo := end + sectorSize*rapid.IntRange(1, 20).Draw(t, "fillSectors")
		// What the disk held before the batches: fill from some point
		// inside or after the last batch.
		from := rapid.IntRange(starts[len(starts)-1]/sectorSize, end/sectorSize).Draw(t, "fillFrom") * sectorSize
		before := appendFill(nil, seq, int64(from), int64(fillTo))
		data = append(data, before[end-from:]...)
		all := flatten(per, len(per))
		for _, last := range []bool{true, false} {
			sc := scanSegment(data, seq, last)
			if sc.damaged || sc.validEnd != int64(end) {
				t.Fatalf("fill tail (last=%v): damaged=%v end=%d of %d (%s)", last, sc.damaged, sc.validEnd, end, sc.why)
			}
			if err := sameRecords(sc.records, all); err != nil {
				t.Fatal(err)
			}
		}
		if sc := scanSegment(data, seq+1, false); !sc.lossy {
			t.Fatal("another segment's fill read as a clean end")
		}

		switch rapid.IntRange(0, 2).Draw(t, "damage") {
		case 0:
			// The last batch torn: some of its sectors still hold the fill.
			last := starts[len(starts)-1]
			torn := bytes.Clone(data)
			for s := last; s < end; s += sectorSize {
				if s >= from && rapid.Bool().Draw(t, fmt.Sprint("keepFill", s)) {
					copy(torn[s:s+sectorSize], before[s-from:])
				}
			}
			sc := scanSegment(torn, seq, true)
			if sc.lossy {
				t.Fatalf("batch torn over fill reported as loss: %s", sc.why)
			}
			if err := sameRecords(sc.records, all[:len(sc.records)]); err != nil || len(sc.records) < len(flatten(per, len(per)-1)) {
				t.Fatalf("torn over fill: %d records kept (%v)", len(sc.records), err)
			}
		case 1:
			// A fill sector written somewhere else (another place or
			// segment) lands after the last batch.
			at := end + sectorSize*rapid.IntRange(0, (fillTo-end)/sectorSize-1).Draw(t, "at")
			bad := bytes.Clone(data)
			wrong := appendFill(nil, seq, int64(at+sectorSize), int64(at+2*sectorSize))
			if rapid.Bool().Draw(t, "otherSeq") {
				wrong = appendFill(nil, seq+1, int64(at), int64(at+sectorSize))
			}
			copy(bad[at:], wrong)
			if sc := scanSegment(bad, seq, false); !sc.lossy {
				t.Fatalf("misplaced fill at %d in an older segment not judged lossy", at)
			}
			if sc := scanSegment(bad, seq, true); at == end && !sc.lossy {
				t.Fatal("misplaced fill right after the last batch read as an end")
			}
		case 2:
			// Zeros inside the fill: an older segment's fill was synced
			// with its batches, so this is damage there.
			at := end + sectorSize*rapid.IntRange(0, (fillTo-end)/sectorSize-1).Draw(t, "at")
			bad := bytes.Clone(data)
			clear(bad[at : at+sectorSize])
			if sc := scanSegment(bad, seq, false); !sc.lossy {
				t.Fatal("zeros in an older segment's fill not judged lossy")
			}
			if sc := scanSegment(bad, seq, true); sc.lossy || len(sc.records) != len(all) {
				t.Fatalf("zeros in the newest segment's fill: lossy=%v, %d records (%s)", sc.lossy, len(sc.records), sc.why)
			}
		}
	})
}

// TestEncodeBatchIntoUsedBuffer: a batch laid out in the previous batch's
// buffer (storage reuses it) is byte for byte the batch laid out fresh,
// padding included.
func TestEncodeBatchIntoUsedBuffer(t *testing.T) {
	recs := []byte("some records that end inside a sector")
	dirty := bytes.Repeat([]byte{0xAB}, 4*sectorSize)
	got := encodeBatch(dirty, 7, recs)
	if want := encodeBatch(nil, 7, recs); !bytes.Equal(got, want) {
		t.Fatal("a batch laid out in a used buffer differs from a fresh one")
	}
	if &got[0] != &dirty[0] {
		t.Fatal("the buffer was not reused")
	}
}
