package demo

import (
	"bytes"
	"fmt"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// ParseLog keeps exactly the records written before the first damage, for
// any damage after any prefix: a cut, a zero-filled hole, a flipped byte.
func TestParseLogStopsAtFirstDamage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		payloads := rapid.SliceOfN(rapid.SliceOfN(rapid.Byte(), 1, 100), 1, 20).Draw(t, "payloads")
		var log []byte
		var ends []int
		for _, p := range payloads {
			log = appendRecord(log, p)
			ends = append(ends, len(log))
		}
		recs, valid := ParseLog(log, true)
		if len(recs) != len(payloads) || valid != int64(len(log)) {
			t.Fatalf("clean log: %d records, %d valid of %d", len(recs), valid, len(log))
		}
		at := rapid.IntRange(0, len(log)-1).Draw(t, "at")
		damaged := bytes.Clone(log)
		switch rapid.IntRange(0, 2).Draw(t, "damage") {
		case 0:
			damaged = damaged[:at]
		case 1:
			n := rapid.IntRange(1, len(log)-at).Draw(t, "hole")
			clear(damaged[at : at+n])
		case 2:
			damaged[at] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
		}
		// Where the damage really starts: zeroing a zero changes nothing.
		at = 0
		for at < len(damaged) && damaged[at] == log[at] {
			at++
		}
		if at == len(log) {
			return
		}
		recs, valid = ParseLog(damaged, true)
		intact := 0 // records entirely before the damage
		for intact < len(ends) && ends[intact] <= at {
			intact++
		}
		if len(recs) != intact {
			t.Fatalf("damage at %d: kept %d records, want the %d before it", at, len(recs), intact)
		}
		for i, r := range recs {
			if !bytes.Equal(r.Payload, payloads[i]) {
				t.Fatalf("record %d altered", i)
			}
		}
		wantValid := 0
		if intact > 0 {
			wantValid = ends[intact-1]
		}
		if valid != int64(wantValid) {
			t.Fatalf("valid prefix %d, want %d", valid, wantValid)
		}
	})
}

// Without the CRC check (the planted bug) a torn record parses: that is what
// the simulator's no-crc-check scenario must catch.
func TestNoCRCAcceptsTornRecord(t *testing.T) {
	log := appendRecord(nil, []byte("hello world"))
	clear(log[recHeader+5:])
	if recs, _ := ParseLog(log, true); len(recs) != 0 {
		t.Fatal("CRC check accepted a torn record")
	}
	if recs, _ := ParseLog(log, false); len(recs) != 1 {
		t.Fatal("without the check the torn record should parse (the bug the simulator must catch)")
	}
}

func TestFrames(t *testing.T) {
	f := appendFrame(nil, msgAppend, 7, []byte("x"))
	typ, seq, tail, err := parseFrame(f[4:])
	if err != nil || typ != msgAppend || seq != 7 || string(tail) != "x" {
		t.Fatal(fmt.Sprint(typ, seq, tail, err))
	}
	if _, _, _, err := parseFrame([]byte{1, 2}); err == nil {
		t.Fatal("short frame accepted")
	}
}
