package checker

import (
	"strings"
	"testing"
)

var tp0 = KafkaTP{Topic: "t", Partition: 0}

func onlyT(topic string) bool { return topic == "t" }

// batch builds a well-formed fetched batch holding values from base.
func batch(base int64, values ...string) KafkaBatch {
	b := KafkaBatch{BaseOffset: base, LastOffsetDelta: int32(len(values) - 1), NumRecords: int32(len(values)), CRCValid: true}
	for i, v := range values {
		b.Records = append(b.Records, KafkaRecord{Offset: base + int64(i), Value: v})
	}
	return b
}

func acked(call, ret int64, off int64, values ...string) KafkaProduce {
	return KafkaProduce{Client: "c1", TP: tp0, Values: values, Call: call, Return: ret, Outcome: KafkaAcked, Offset: off}
}

func outcome(o KafkaOutcome, call, ret int64, values ...string) KafkaProduce {
	return KafkaProduce{Client: "c1", TP: tp0, Values: values, Call: call, Return: ret, Outcome: o}
}

func fetch(call, ret, off, hw int64, batches ...KafkaBatch) KafkaFetch {
	return KafkaFetch{Client: "c2", TP: tp0, Offset: off, Call: call, Return: ret, HighWatermark: hw, Batches: batches}
}

// cleanHistory is a run with a crash in it: a, b acknowledged at 0-1; c's
// first produce had an unknown outcome but landed at 2, its retry was
// acknowledged at 3; every acknowledged record is read back later.
func cleanHistory() ([]KafkaProduce, []KafkaFetch) {
	produces := []KafkaProduce{
		acked(10, 20, 0, "a", "b"),
		outcome(KafkaUnknown, 30, 40, "c"),
		acked(50, 60, 3, "c"),
		outcome(KafkaFailed, 61, 62, "d"),
	}
	fetches := []KafkaFetch{
		fetch(25, 35, 0, 2, batch(0, "a", "b")),
		fetch(70, 80, 1, 4, batch(0, "a", "b"), batch(2, "c"), batch(3, "c")),
		fetch(90, 95, 4, 4),
		fetch(96, 97, 0, 4, batch(0, "a", "b")),
	}
	return produces, fetches
}

func TestKafkaCleanHistoryPasses(t *testing.T) {
	p, f := cleanHistory()
	if err := CheckKafka(p, f, onlyT); err != nil {
		t.Fatal(err)
	}
}

// Each case breaks the clean history in one way and names the words the
// report must contain.
func TestKafkaViolationsAreDetected(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(p *[]KafkaProduce, f *[]KafkaFetch)
		wants string
	}{
		{"lost: high watermark below an acknowledged offset", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 0, 1, batch(0, "a")))
		}, "acknowledged records lost"},
		{"lost: offset out of range below the acknowledged end", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			ff := fetch(100, 110, 3, 2)
			ff.Err = 1
			*f = append(*f, ff)
		}, "OFFSET_OUT_OF_RANGE"},
		{"lost: partition gone", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			ff := fetch(100, 110, 0, -1)
			ff.Err = 3
			*f = append(*f, ff)
		}, "partition was lost"},
		{"overwritten: an acknowledged offset holds another record", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*p = append(*p, outcome(KafkaUnknown, 98, 99, "x"))
			*f = append(*f, fetch(100, 110, 3, 5, batch(3, "x")))
		}, "offset 3 holds two records"},
		{"two fetches disagree", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*p = append(*p, outcome(KafkaUnknown, 98, 99, "x", "y"))
			*f = append(*f, fetch(100, 101, 4, 5, batch(4, "x")), fetch(102, 103, 4, 5, batch(4, "y")))
		}, "offset 4 holds two records"},
		{"duplicate of a record never in doubt", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 4, 5, batch(4, "a")))
		}, "duplicated by the broker"},
		{"phantom record", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 4, 5, batch(4, "zz")))
		}, "never produced"},
		{"record of a refused produce", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 4, 5, batch(4, "d")))
		}, "refused"},
		{"record of another partition", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			other := outcome(KafkaUnknown, 98, 99, "o")
			other.TP.Partition = 1
			*p = append(*p, other)
			*f = append(*f, fetch(100, 110, 4, 5, batch(4, "o")))
		}, "produced to t-1"},
		{"bad CRC", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			b := batch(0, "a", "b")
			b.CRCValid = false
			*f = append(*f, fetch(100, 110, 0, 4, b))
		}, "fails its CRC"},
		{"batch cut short", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			b := batch(0, "a")
			b.Problem = "cut"
			*f = append(*f, fetch(100, 110, 0, 4, b))
		}, "not whole"},
		{"record count wrong", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			b := batch(0, "a", "b")
			b.Records = b.Records[:1]
			*f = append(*f, fetch(100, 110, 0, 4, b))
		}, "counts 2 records"},
		{"gap between batches", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 0, 4, batch(0, "a", "b"), batch(3, "c")))
		}, "not dense"},
		{"batches out of order", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 2, 4, batch(2, "c"), batch(0, "a", "b")))
		}, "not dense"},
		{"first batch skips the offset asked for", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 1, 4, batch(2, "c")))
		}, "not the offset asked for"},
		{"served past the high watermark", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*f = append(*f, fetch(100, 110, 2, 4, batch(2, "c"), batch(3, "c"), batch(4, "c")))
		}, "past the high watermark"},
		{"high watermark went back", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*p = append(*p, outcome(KafkaUnknown, 98, 99, "e"))
			*f = append(*f, fetch(100, 101, 4, 5, batch(4, "e")), fetch(102, 103, 5, 4))
		}, "went back"},
		{"acknowledged record never read back", func(p *[]KafkaProduce, f *[]KafkaFetch) {
			*p = append(*p, acked(100, 101, 4, "late"))
		}, "never read back"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, f := cleanHistory()
			tc.edit(&p, &f)
			err := CheckKafka(p, f, onlyT)
			if err == nil {
				t.Fatalf("not detected")
			}
			if !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("reported %q, want it to mention %q", err, tc.wants)
			}
		})
	}
}

// A topic without flush-on-every-batch may lose acknowledged records in a
// power loss and reuse their offsets; between power losses it keeps them,
// as the page cache outlives a killed process.
func TestKafkaLazyTopicToleratesLoss(t *testing.T) {
	lazy := func(string) bool { return false }
	p := []KafkaProduce{acked(10, 20, 0, "a"), acked(30, 40, 0, "b")}
	f := []KafkaFetch{fetch(50, 60, 0, 1, batch(0, "b"))}
	if err := CheckKafka(p, f, lazy, 25); err != nil {
		t.Fatal(err)
	}
	if err := CheckKafka(p, f, lazy); err == nil || !strings.Contains(err.Error(), "did not lose power") {
		t.Fatalf("an acknowledged record replaced with no power loss: %v", err)
	}
	// A loss while a produce is in flight excuses it too.
	if err := CheckKafka(p, f, lazy, 15); err != nil {
		t.Fatalf("loss while the first produce was in flight: %v", err)
	}
	phantom := append(f, fetch(70, 80, 0, 1, batch(0, "zz")))
	if err := CheckKafka(p, phantom, lazy, 25); err == nil || !strings.Contains(err.Error(), "never produced") {
		t.Fatalf("phantom on a lazy topic: %v", err)
	}
	dup := append(f, fetch(70, 80, 0, 2, batch(0, "b"), batch(1, "b")))
	if err := CheckKafka(p, dup, lazy, 25); err == nil || !strings.Contains(err.Error(), "duplicated by the broker") {
		t.Fatalf("duplicate on a lazy topic: %v", err)
	}
}

// On a lazy topic, what was acknowledged since the latest power loss must
// survive kills: the high watermark may not fall below it and Final wants
// it read back; what a power loss may have taken is excused.
func TestKafkaLazyTopicKeepsWhatNoPowerLossTook(t *testing.T) {
	lazy := func(string) bool { return false }
	p := []KafkaProduce{acked(10, 20, 0, "a"), acked(30, 40, 1, "b")}
	readBack := []KafkaFetch{fetch(50, 60, 0, 2, batch(0, "a", "b"))}
	if err := CheckKafka(p, readBack, lazy); err != nil {
		t.Fatal(err)
	}
	short := []KafkaFetch{fetch(50, 60, 0, 1, batch(0, "a"))}
	if err := CheckKafka(p, short, lazy); err == nil || !strings.Contains(err.Error(), "acknowledged records lost") {
		t.Fatalf("high watermark below an acknowledged record, no power loss: %v", err)
	}
	if err := CheckKafka(p, short, lazy, 45); err != nil {
		t.Fatalf("the same after a power loss: %v", err)
	}
	// A loss between the two produces excuses only the first.
	if err := CheckKafka(p, short, lazy, 25); err == nil || !strings.Contains(err.Error(), "acknowledged records lost") {
		t.Fatalf("record acknowledged after the loss lost: %v", err)
	}
	if err := CheckKafka(p, nil, lazy, 25); err == nil || !strings.Contains(err.Error(), "never read back") || !strings.Contains(err.Error(), `"b"`) || strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("Final after a loss between the produces: %v", err)
	}
	// The high watermark goes back only with a power loss, and a fetch
	// sent before the loss but answered after it sets no mark.
	// ("b" had an unknown outcome here, so no acknowledgement is lost.)
	pu := []KafkaProduce{acked(10, 20, 0, "a"), outcome(KafkaUnknown, 30, 40, "b")}
	hws := []KafkaFetch{fetch(50, 60, 0, 2, batch(0, "a", "b")), fetch(70, 80, 1, 1)}
	if err := CheckKafka(pu, hws, lazy); err == nil || !strings.Contains(err.Error(), "went back") {
		t.Fatalf("high watermark went back with no power loss: %v", err)
	}
	if err := CheckKafka(pu, hws, lazy, 65); err != nil {
		t.Fatalf("high watermark back after a power loss: %v", err)
	}
	stale := []KafkaFetch{fetch(50, 60, 0, 2, batch(0, "a", "b")), fetch(55, 70, 2, 2), fetch(75, 80, 1, 1)}
	if err := CheckKafka(pu, stale, lazy, 65); err != nil {
		t.Fatalf("a fetch answered across the power loss set a mark: %v", err)
	}
}

// A record seen at two offsets is fine when a produce of it had an unknown
// outcome, whichever came first.
func TestKafkaDuplicateAfterUnknownIsTolerated(t *testing.T) {
	p := []KafkaProduce{outcome(KafkaUnknown, 10, 20, "a"), acked(30, 40, 1, "a")}
	f := []KafkaFetch{fetch(50, 60, 0, 2, batch(0, "a"), batch(1, "a"))}
	if err := CheckKafka(p, f, onlyT); err != nil {
		t.Fatal(err)
	}
}

// retainedHistory: a, b acknowledged at 0-1, c at 2; retention then moved the
// log start to 2. A fetch below it is out of range, c is read back, and a
// and b (read back before) need not be again.
func retainedHistory() ([]KafkaProduce, []KafkaFetch) {
	produces := []KafkaProduce{acked(10, 20, 0, "a", "b"), acked(30, 40, 2, "c"), acked(41, 42, 3, "never-read")}
	below := fetch(50, 60, 0, 4)
	below.Err, below.LogStartOffset = 1, 2
	tail := fetch(70, 80, 2, 4, batch(2, "c"))
	tail.LogStartOffset = 2
	return produces, []KafkaFetch{below, tail}
}

// TestKafkaRetention: on a topic with retention, records below the log start
// are gone by design; the log start never goes back, never passes the high
// watermark, and stays 0 on topics without retention.
func TestKafkaRetention(t *testing.T) {
	check := func(p []KafkaProduce, f []KafkaFetch, retained bool) error {
		k := NewKafkaLog(onlyT)
		if retained {
			k.Retention = onlyT
		}
		return k.replay(p, f, nil)
	}
	p, f := retainedHistory()
	// Offset 3 was acknowledged and never read back: move the log start
	// past it in a later fetch and it is excused.
	last := fetch(90, 95, 4, 4)
	last.LogStartOffset = 4
	if err := check(p, append(f, last), true); err != nil {
		t.Fatalf("a clean history with retention: %v", err)
	}
	if err := check(p, f, true); err == nil || !strings.Contains(err.Error(), "never read back") {
		t.Fatalf("an acknowledged record at or above the log start never read: %v", err)
	}
	cases := []struct {
		name     string
		edit     func(f []KafkaFetch) []KafkaFetch
		retained bool
		wants    string
	}{
		{"no retention on the topic", func(f []KafkaFetch) []KafkaFetch { return append(f, last) }, false, "without retention"},
		{"log start went back", func(f []KafkaFetch) []KafkaFetch {
			back := fetch(100, 101, 3, 4, batch(3, "never-read"))
			back.LogStartOffset = 1
			return append(f, last, back)
		}, true, "log start went back"},
		{"log start above the high watermark", func(f []KafkaFetch) []KafkaFetch {
			over := fetch(90, 95, 4, 4)
			over.LogStartOffset = 5
			return append(f, over)
		}, true, "above the high watermark"},
		{"out of range at or above the log start", func(f []KafkaFetch) []KafkaFetch {
			oor := fetch(90, 95, 2, 4)
			oor.Err, oor.LogStartOffset = 1, 2
			return append(f, oor, last)
		}, true, "acknowledged records lost"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, f := retainedHistory()
			err := check(p, tc.edit(f), tc.retained)
			if err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Fatalf("reported %v, want it to mention %q", err, tc.wants)
			}
		})
	}
}
