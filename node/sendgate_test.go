package node

import (
	"fmt"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// wire records what a SendGate released, per connection, in order.
type wire struct {
	out   map[ConnID][]string
	log   []string
	reset map[ConnID]bool
}

func newWire() *wire { return &wire{out: map[ConnID][]string{}, reset: map[ConnID]bool{}} }

func (w *wire) Send(c ConnID, data []byte) {
	w.out[c] = append(w.out[c], string(data))
	w.log = append(w.log, fmt.Sprintf("send %d %s", c, data))
}
func (w *wire) Close(c ConnID) {
	w.out[c] = append(w.out[c], "<close>")
	w.log = append(w.log, fmt.Sprintf("close %d", c))
}
func (w *wire) Reset(c ConnID) {
	w.reset[c] = true
	w.log = append(w.log, fmt.Sprintf("reset %d", c))
}

func (w *wire) RecycleSent(c ConnID, data []byte) {
	w.out[c] = append(w.out[c], "<recycle "+string(data)+">")
	w.log = append(w.log, fmt.Sprintf("recycle %d %s", c, data))
}

// A RecycleSent waits behind the held sends of its connection, and is
// dropped with them, without a reset of its own, when the gate is poisoned.
func TestSendGateRecycleSent(t *testing.T) {
	w := newWire()
	g := NewSendGate(w)
	g.Send(7, []byte("a"))
	g.RecycleSent(7, []byte("a"))
	if got := strings.Join(w.log, "; "); got != "send 7 a; recycle 7 a" {
		t.Fatalf("nothing held: %s", got)
	}
	g.Submitted(1, OpSync)
	g.SendAfter(7, []byte("ack"), 1)
	g.Send(7, []byte("b"))
	g.RecycleSent(7, []byte("b"))
	g.RecycleSent(8, []byte("x")) // another connection: at once
	if got := strings.Join(w.out[7], ","); got != "a,<recycle a>" {
		t.Fatalf("conn 7 before the sync: %s", got)
	}
	if got := strings.Join(w.out[8], ","); got != "<recycle x>" {
		t.Fatalf("conn 8: %s", got)
	}
	g.Completed(1, OpSync, nil)
	if got := strings.Join(w.out[7], ","); got != "a,<recycle a>,ack,b,<recycle b>" {
		t.Fatalf("conn 7 after the sync: %s", got)
	}

	w = newWire()
	g = NewSendGate(w)
	g.Submitted(1, OpSync)
	g.SendAfter(7, []byte("ack"), 1)
	g.RecycleSent(7, []byte("ack"))
	g.Completed(1, OpSync, ErrIO)
	if got := strings.Join(w.log, "; "); got != "reset 7" {
		t.Fatalf("poisoned: %s", got)
	}
}

func TestSendGateHoldsUntilBarrierAndKeepsOrder(t *testing.T) {
	w := newWire()
	g := NewSendGate(w)
	g.Submitted(1, OpWrite)
	g.Submitted(2, OpSync)
	g.Send(7, []byte("a"))
	g.SendAfter(7, []byte("ack1"), 2)
	g.Send(7, []byte("b")) // must wait behind ack1
	g.Close(7)             // so must the close
	g.Send(8, []byte("x")) // another connection is not held up
	if got := strings.Join(w.log, "; "); got != "send 7 a; send 8 x" {
		t.Fatalf("before the sync: %s", got)
	}
	g.Completed(1, OpWrite, nil)
	if g.Held() != 3 {
		t.Fatalf("write completion released something: held %d", g.Held())
	}
	g.Completed(2, OpSync, nil)
	if got := strings.Join(w.out[7], ","); got != "a,ack1,b,<close>" {
		t.Fatalf("conn 7 got %s", got)
	}
	if g.Held() != 0 {
		t.Fatalf("held %d after release", g.Held())
	}
	// A barrier already passed sends at once.
	g.SendAfter(9, []byte("late"), 2)
	if got := strings.Join(w.out[9], ","); got != "late" {
		t.Fatalf("conn 9 got %s", got)
	}
}

func TestSendGatePoisonedByFailedSync(t *testing.T) {
	w := newWire()
	g := NewSendGate(w)
	g.Submitted(1, OpSync)
	g.Submitted(2, OpSync)
	g.SendAfter(1, []byte("ack"), 1)
	g.SendAfter(2, []byte("ack"), 2)
	g.Completed(1, OpSync, fmt.Errorf("%w: fsync", ErrIO))
	if len(w.out[1]) != 0 || len(w.out[2]) != 0 || !w.reset[1] || !w.reset[2] {
		t.Fatalf("after a failed sync: out=%v reset=%v", w.out, w.reset)
	}
	// The next sync "succeeds", but after fsyncgate nothing it covers can be
	// trusted: new acknowledgements reset their connections too.
	g.Completed(2, OpSync, nil)
	g.Submitted(3, OpSync)
	g.SendAfter(3, []byte("ack"), 3)
	g.Completed(3, OpSync, nil)
	if len(w.out[3]) != 0 || !w.reset[3] {
		t.Fatalf("poisoned gate let an ack out: out=%v", w.out[3])
	}
}

func TestSendGateNotPoisonedByHarmlessErrors(t *testing.T) {
	w := newWire()
	g := NewSendGate(w)
	g.Submitted(1, OpSync)
	g.Submitted(2, OpSync)
	g.SendAfter(1, []byte("ack"), 2)
	g.Completed(1, OpSync, fmt.Errorf("%w: no such file", ErrNotExist))
	g.Completed(2, OpSync, nil)
	if got := strings.Join(w.out[1], ","); got != "ack" {
		t.Fatalf("got %q: a sync of a missing file changed nothing and must not poison", got)
	}
}

func TestSendGateForgetAndMisuse(t *testing.T) {
	w := newWire()
	g := NewSendGate(w)
	g.Submitted(1, OpSync)
	g.SendAfter(4, []byte("ack"), 1)
	g.Forget(4)
	g.Completed(1, OpSync, nil)
	if len(w.out[4]) != 0 {
		t.Fatal("a forgotten connection still got data")
	}
	mustPanic(t, "barrier on a write", func() {
		g.Submitted(2, OpWrite)
		g.SendAfter(5, []byte("x"), 2)
	})
	mustPanic(t, "out-of-order completion", func() { g.Completed(5, OpSync, nil) })
}

func mustPanic(t *testing.T, what string, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatalf("%s did not panic", what)
		}
	}()
	fn()
}

// TestSendGateProperties: under random interleavings, every connection's
// output is exactly its submitted items in order, and nothing waiting on an
// op is released before that op completes. Some ops run in the background:
// they complete in order among themselves, each after every op submitted
// before it, while later ops may complete first.
func TestSendGateProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := newWire()
		g := NewSendGate(w)
		var submitted OpID
		var bg []bool       // bg[id-1]: op id runs in the background
		var done []bool     // done[id-1]: op id completed
		var fgNext OpID = 1 // the next foreground op to complete is at or after this
		completedBefore := func(id OpID) bool {
			for j := OpID(1); j < id; j++ {
				if !done[j-1] {
					return false
				}
			}
			return true
		}
		complete := func(id OpID) {
			done[id-1] = true
			g.Completed(id, OpSync, nil)
		}
		want := map[ConnID][]string{}
		type wait struct {
			conn ConnID
			n    int // index in want[conn]
			op   OpID
		}
		var waits []wait
		for i := range rapid.IntRange(1, 200).Draw(t, "steps") {
			c := ConnID(rapid.IntRange(1, 4).Draw(t, "conn"))
			switch rapid.IntRange(0, 5).Draw(t, "action") {
			case 0:
				submitted++
				isBG := rapid.IntRange(0, 3).Draw(t, "background") == 0
				bg, done = append(bg, isBG), append(done, false)
				if isBG {
					g.SubmittedBackground(submitted, OpSync)
				} else {
					g.Submitted(submitted, OpSync)
				}
			case 1: // the foreground lane completes its next op
				for fgNext <= submitted && (bg[fgNext-1] || done[fgNext-1]) {
					fgNext++
				}
				if fgNext <= submitted {
					complete(fgNext)
				}
			case 2: // the background lane completes its oldest op, if it started
				for id := OpID(1); id <= submitted; id++ {
					if bg[id-1] && !done[id-1] {
						if completedBefore(id) {
							complete(id)
						}
						break
					}
				}
			case 3:
				if submitted > 0 {
					op := OpID(rapid.IntRange(1, int(submitted)).Draw(t, "op"))
					if bg[op-1] {
						break
					}
					data := fmt.Sprint(i)
					waits = append(waits, wait{c, len(want[c]), op})
					want[c] = append(want[c], data)
					g.SendAfter(c, []byte(data), op)
				}
			default:
				data := fmt.Sprint(i)
				want[c] = append(want[c], data)
				g.Send(c, []byte(data))
			}
			for _, wt := range waits {
				if len(w.out[wt.conn]) > wt.n && !done[wt.op-1] {
					t.Fatalf("item %d on conn %d released before op %d completed", wt.n, wt.conn, wt.op)
				}
			}
			for c, got := range w.out {
				for j, v := range got {
					if want[c][j] != v {
						t.Fatalf("conn %d item %d: got %s want %s", c, j, v, want[c][j])
					}
				}
			}
		}
		for id := OpID(1); id <= submitted; id++ {
			if !done[id-1] {
				complete(id)
			}
		}
		for c, items := range want {
			if len(w.out[c]) != len(items) {
				t.Fatalf("conn %d: %d of %d items released after every op completed", c, len(w.out[c]), len(items))
			}
		}
	})
}

func TestSendGateBackgroundOps(t *testing.T) {
	w := newWire()
	g := NewSendGate(w)
	g.Submitted(1, OpWrite)
	g.SubmittedBackground(2, OpSync)
	g.Submitted(3, OpSync)
	g.SendAfter(7, []byte("ack3"), 3)
	mustPanic(t, "waiting on a background op", func() { g.SendAfter(8, []byte("x"), 2) })
	mustPanic(t, "a foreground op before an earlier one", func() { g.Completed(3, OpSync, nil) })
	g.Completed(1, OpWrite, nil)
	g.Completed(3, OpSync, nil) // steps over the background op 2
	if got := strings.Join(w.out[7], ","); got != "ack3" {
		t.Fatalf("conn 7 got %q", got)
	}
	g.Submitted(4, OpSync)
	g.SendAfter(7, []byte("ack4"), 4)
	g.Completed(2, OpSync, nil)
	if g.Held() != 1 {
		t.Fatalf("a background completion released a send waiting on op 4: held %d", g.Held())
	}
	mustPanic(t, "a background op completing twice", func() { g.Completed(2, OpSync, nil) })
	g.Completed(4, OpSync, nil)
	if got := strings.Join(w.out[7], ","); got != "ack3,ack4" {
		t.Fatalf("conn 7 got %q", got)
	}
	// A failed background sync poisons the gate like any other.
	g.SubmittedBackground(5, OpSync)
	g.Submitted(6, OpSync)
	g.SendAfter(9, []byte("ack6"), 6)
	g.Completed(5, OpSync, fmt.Errorf("%w: fsync", ErrIO))
	g.Completed(6, OpSync, nil)
	if len(w.out[9]) != 0 || !w.reset[9] {
		t.Fatalf("after a failed background sync: out=%v reset=%v", w.out[9], w.reset)
	}
	mustPanic(t, "a background write", func() { g.SubmittedBackground(7, OpWrite) })
}
