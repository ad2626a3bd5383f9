package sched

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"herd/node"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type recorder struct {
	q   *Queue
	got []uint64
	at  []Time
}

func (r *recorder) Fire(arg uint64) {
	r.got = append(r.got, arg)
	r.at = append(r.at, r.q.Now())
}

func newQ(seed uint64) *Queue { return New(node.NewRand(rand.NewPCG(seed, 0))) }

// Events fire in time order; the clock never goes back; every event fires.
func TestFiresInTimeOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		q := newQ(rapid.Uint64().Draw(t, "seed"))
		r := &recorder{q: q}
		times := rapid.SliceOfN(rapid.Int64Range(0, 1000), 1, 300).Draw(t, "times")
		for i, at := range times {
			q.At(Time(at), r, uint64(i))
		}
		for q.Step() {
		}
		if len(r.got) != len(times) {
			t.Fatalf("fired %d of %d", len(r.got), len(times))
		}
		if !slices.IsSorted(r.at) {
			t.Fatalf("fire times out of order: %v", r.at)
		}
		for i, arg := range r.got {
			if Time(times[arg]) != r.at[i] {
				t.Fatalf("event %d fired at %v, scheduled for %v", arg, r.at[i], times[arg])
			}
		}
	})
}

// Simultaneous events run in an order fixed by the seed: the same seed gives
// the same order, different seeds explore different orders.
func TestTieBreakIsSeeded(t *testing.T) {
	order := func(seed uint64) []uint64 {
		q := newQ(seed)
		r := &recorder{q: q}
		for i := range 10 {
			q.At(5, r, uint64(i))
		}
		for q.Step() {
		}
		return r.got
	}
	if !slices.Equal(order(1), order(1)) {
		t.Fatal("same seed, different order")
	}
	distinct := map[string]bool{}
	for seed := range uint64(20) {
		distinct[fmt.Sprint(order(seed))] = true
	}
	if len(distinct) < 5 {
		t.Fatalf("20 seeds gave only %d orders of simultaneous events", len(distinct))
	}
}

func TestRunUntilAndPast(t *testing.T) {
	q := newQ(1)
	r := &recorder{q: q}
	q.At(10, r, 1)
	q.At(30, r, 2)
	q.RunUntil(20, nil)
	if len(r.got) != 1 || q.Now() != 20 {
		t.Fatalf("RunUntil(20): fired %v, now %v", r.got, q.Now())
	}
	defer func() {
		if recover() == nil {
			t.Fatal("scheduling in the past did not panic")
		}
	}()
	q.At(5, r, 3)
}
