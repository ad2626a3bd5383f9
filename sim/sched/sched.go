// Package sched is the simulator's clock and event queue: virtual time that
// jumps from one scheduled event to the next, and a total order on events
// that is fixed by the run's seed.
//
// Events due at the same instant run in an order drawn from the seed (a random
// tie-break taken when the event is scheduled), so a run explores a different
// interleaving of simultaneous events for every seed while replaying exactly
// for the same seed. Code that needs two events to keep their relative order
// (bytes on one connection, completions of one disk) must give them strictly
// increasing times; Queue never reorders events with different times.
package sched

import (
	"fmt"
	"time"

	"herd/node"
)

// Time is simulated time in nanoseconds since the start of the run. It is the
// simulator's true time; each node reads a clock derived from it (with drift
// and jumps).
type Time int64

// Add returns t+d.
func (t Time) Add(d time.Duration) Time { return t + Time(d) }

// Sub returns t-u.
func (t Time) Sub(u Time) time.Duration { return time.Duration(t - u) }

func (t Time) String() string { return time.Duration(t).String() }

// Handler receives fired events. arg is whatever was passed to At; handlers
// use it to tell their events apart and to ignore stale ones (a cancelled
// timer carries an old generation number).
type Handler interface {
	Fire(arg uint64)
}

type entry struct {
	at  Time
	tie uint64
	h   Handler
	arg uint64
}

func (e *entry) before(f *entry) bool {
	return e.at < f.at || (e.at == f.at && e.tie < f.tie)
}

// Queue is a min-heap of events ordered by (time, seeded tie-break).
type Queue struct {
	now   Time
	heap  []entry
	tie   *node.Rand
	fired uint64
}

// New returns an empty queue at time 0 whose tie-breaks come from tie.
func New(tie *node.Rand) *Queue {
	return &Queue{tie: tie, heap: make([]entry, 0, 1024)}
}

// Now is the current simulated time: the time of the event being fired, or of
// the last one fired.
func (q *Queue) Now() Time { return q.now }

// Len is the number of scheduled events.
func (q *Queue) Len() int { return len(q.heap) }

// Fired is the number of events fired so far.
func (q *Queue) Fired() uint64 { return q.fired }

// At schedules h.Fire(arg) at time t, which must not be in the past.
func (q *Queue) At(t Time, h Handler, arg uint64) {
	if t < q.now {
		panic(fmt.Sprintf("sched: event at %v scheduled in the past (now %v)", t, q.now))
	}
	q.heap = append(q.heap, entry{at: t, tie: q.tie.Uint64(), h: h, arg: arg})
	q.up(len(q.heap) - 1)
}

// After schedules h.Fire(arg) d from now (d < 0 counts as 0).
func (q *Queue) After(d time.Duration, h Handler, arg uint64) {
	if d < 0 {
		d = 0
	}
	q.At(q.now.Add(d), h, arg)
}

// Peek returns the time of the next event.
func (q *Queue) Peek() (Time, bool) {
	if len(q.heap) == 0 {
		return 0, false
	}
	return q.heap[0].at, true
}

// Step fires the next event and returns true, or returns false if the queue is
// empty.
func (q *Queue) Step() bool {
	if len(q.heap) == 0 {
		return false
	}
	e := q.heap[0]
	last := len(q.heap) - 1
	q.heap[0] = q.heap[last]
	q.heap[last] = entry{}
	q.heap = q.heap[:last]
	if last > 0 {
		q.down(0)
	}
	q.now = e.at
	q.fired++
	e.h.Fire(e.arg)
	return true
}

// RunUntil fires events until the next one is after t or stop returns true,
// then sets the clock to t (if it stopped for time). stop is checked after
// every event and may be nil.
func (q *Queue) RunUntil(t Time, stop func() bool) {
	for len(q.heap) > 0 && q.heap[0].at <= t {
		q.Step()
		if stop != nil && stop() {
			return
		}
	}
	if q.now < t {
		q.now = t
	}
}

// Quaternary heap: shallower than a binary one, so pops touch fewer cache
// lines; pops dominate the simulator's profile.
const arity = 4

func (q *Queue) up(i int) {
	h := q.heap
	e := h[i]
	for i > 0 {
		p := (i - 1) / arity
		if !e.before(&h[p]) {
			break
		}
		h[i] = h[p]
		i = p
	}
	h[i] = e
}

func (q *Queue) down(i int) {
	h := q.heap
	n := len(h)
	e := h[i]
	for {
		first := i*arity + 1
		if first >= n {
			break
		}
		best := first
		end := min(first+arity, n)
		for c := first + 1; c < end; c++ {
			if h[c].before(&h[best]) {
				best = c
			}
		}
		if !h[best].before(&e) {
			break
		}
		h[i] = h[best]
		i = best
	}
	h[i] = e
}
