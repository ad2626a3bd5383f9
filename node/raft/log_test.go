package raft

import (
	"fmt"
	"testing"

	"herd/node"

	"pgregory.net/rapid"
)

// TestLogChunks drives the chunked in-memory log and a plain slice through
// the same appends, truncations, compactions and resets, with runs long
// enough to cross many chunk boundaries, and compares every entry, the
// slices callers see, and the chunk invariants after each step.
func TestLogChunks(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var l raftLog
		l.shift = uint8(rapid.SampledFrom([]int{0, 1, 2, 5, 12}).Draw(t, "shift"))
		var model []Entry // model[k] is the entry at index first+k
		first := Index(1)
		l.reset(0, 1, MakeZxid(1, 0))
		next := func() Entry {
			i := first + Index(len(model))
			return Entry{Index: i, Term: 1, Zxid: MakeZxid(1, uint32(i)), Data: []byte(fmt.Sprint(i))}
		}
		for step := range rapid.IntRange(1, 30).Draw(t, "steps") {
			switch op := rapid.IntRange(0, 9).Draw(t, "op"); {
			case op < 5: // append a run
				for range rapid.IntRange(0, 3*l.chunkLen()+3).Draw(t, "n") {
					e := next()
					l.append(e)
					model = append(model, e)
				}
			case op < 7 && len(model) > 0: // truncate
				k := rapid.IntRange(0, len(model)-1).Draw(t, "truncate")
				l.truncateFrom(first + Index(k))
				model = model[:k]
			case op < 9 && len(model) > 0: // snapshot and compact
				k := rapid.IntRange(0, len(model)-1).Draw(t, "compact")
				i := first + Index(k)
				l.snapIndex = i
				l.compact(i)
				model = model[k+1:]
				first = i + 1
			case op == 9: // install a snapshot past everything
				i := first + Index(len(model)) + Index(rapid.IntRange(0, 10).Draw(t, "gap"))
				l.reset(i, 1, MakeZxid(1, uint32(i)))
				model, first = nil, i+1
			}
			checkLog(t, step, &l, first, model)
		}
	})
}

func checkLog(t *rapid.T, step int, l *raftLog, first Index, model []Entry) {
	last := first + Index(len(model)) - 1
	if l.first != first || l.lastIndex() != last || l.n != len(model) {
		t.Fatalf("step %d: log [%d, %d] n=%d, want [%d, %d]", step, l.first, l.lastIndex(), l.n, first, last)
	}
	// Chunk invariants: head within the first chunk, every chunk but the
	// last full, slots before head zero, the slots in use adding up to n.
	if l.head >= l.chunkLen() || (len(l.chunks) == 0 && (l.head != 0 || l.n != 0)) {
		t.Fatalf("step %d: head %d with %d chunks, n=%d", step, l.head, len(l.chunks), l.n)
	}
	used := 0
	for k, c := range l.chunks {
		if cap(c) != l.chunkLen() || (k < len(l.chunks)-1 && len(c) != l.chunkLen()) || len(c) == 0 {
			t.Fatalf("step %d: chunk %d of %d has len %d cap %d", step, k, len(l.chunks), len(c), cap(c))
		}
		used += len(c)
	}
	if used != l.head+l.n {
		t.Fatalf("step %d: %d slots used, head %d + n %d", step, used, l.head, l.n)
	}
	if len(l.chunks) > 0 {
		for _, e := range l.chunks[0][:l.head] {
			if e.Data != nil || e.Index != 0 {
				t.Fatalf("step %d: a slot before head still holds %v", step, e)
			}
		}
		// Slots past the end of the last chunk were cleared.
		c := l.chunks[len(l.chunks)-1]
		for _, e := range c[len(c):cap(c)] {
			if e.Data != nil {
				t.Fatalf("step %d: a slot past the end still holds %v", step, e)
			}
		}
	}
	if len(l.spare) > 2*len(l.chunks)+1 {
		t.Fatalf("step %d: %d spare chunks for %d in use", step, len(l.spare), len(l.chunks))
	}
	for _, c := range l.spare {
		if len(c) != 0 || cap(c) != l.chunkLen() {
			t.Fatalf("step %d: spare chunk len %d cap %d", step, len(c), cap(c))
		}
		for _, e := range c[:cap(c)] {
			if e.Data != nil {
				t.Fatalf("step %d: a spare chunk still holds %v", step, e)
			}
		}
	}
	for k := range model {
		if got := l.at(first + Index(k)); got.Index != model[k].Index || string(got.Data) != string(model[k].Data) {
			t.Fatalf("step %d: at(%d) = %v, want %v", step, first+Index(k), got, model[k])
		}
	}
	if tm, ok := l.term(first - 1); !ok || tm != l.prevTerm {
		t.Fatalf("step %d: term(first-1) = %d %v", step, tm, ok)
	}
	if _, ok := l.term(last + 1); ok {
		t.Fatalf("step %d: term past the end answered", step)
	}
	// Gathering slices from any start reproduces the model, each slice
	// within one chunk and never empty while entries remain.
	if len(model) > 0 {
		lo := first + Index(rapid.IntRange(0, len(model)-1).Draw(t, "lo"))
		hi := lo + Index(rapid.IntRange(0, int(last-lo)).Draw(t, "hi-lo"))
		var got []Entry
		for i := lo; i <= hi; {
			run := l.slice(i, hi)
			if len(run) == 0 || len(run) > l.chunkLen() {
				t.Fatalf("step %d: slice(%d, %d) gave %d entries", step, i, hi, len(run))
			}
			got = append(got, run...)
			i += Index(len(run))
		}
		if len(got) != int(hi-lo+1) || got[0].Index != lo || got[len(got)-1].Index != hi {
			t.Fatalf("step %d: gathered %d entries for [%d, %d]", step, len(got), lo, hi)
		}
	}
	if l.slice(last+1, last+10) != nil || l.verify() != 0 {
		t.Fatalf("step %d: slice past the end or verify", step)
	}
}

// TestAppendEntriesAcrossChunks checks that an append starting near the end
// of one chunk carries on into the next, within MaxAppendBytes, and that the
// gathered copy does not keep the entries' data once sent.
func TestAppendEntriesAcrossChunks(t *testing.T) {
	const logChunk = defaultLogChunk
	r := &Raft{}
	r.log.shift = 12
	r.cfg.MaxAppendBytes = 100 * (32 + 10)
	r.log.reset(0, 1, MakeZxid(1, 0))
	for i := Index(1); i <= 3*logChunk; i++ {
		r.log.append(Entry{Index: i, Term: 1, Zxid: MakeZxid(1, uint32(i)), Type: EntryNormal, Data: make([]byte, 10)})
	}
	for _, next := range []Index{1, logChunk - 30, logChunk, logChunk + 1, 2*logChunk - 99, 3*logChunk - 5} {
		es, gathered := r.appendEntries(next)
		want := min(100, int(3*logChunk-next+1))
		if len(es) != want || es[0].Index != next || es[len(es)-1].Index != next+Index(want-1) {
			t.Fatalf("append from %d: %d entries [%d..], want %d", next, len(es), es[0].Index, want)
		}
		crosses := (next-1)/logChunk != (next+Index(want)-2)/logChunk
		if gathered != crosses {
			t.Fatalf("append from %d: gathered %v, crosses a chunk %v", next, gathered, crosses)
		}
	}
}

// sendRecorder is a stubEnv that keeps what raft sends.
type sendRecorder struct {
	stubEnv
	sent [][]byte
}

func (s *sendRecorder) Send(c node.ConnID, data []byte) { s.sent = append(s.sent, data) }

// TestSendAppendsAcrossChunks replicates a log of three chunks to a
// follower that has nothing, acknowledging each append as it goes: every
// entry must arrive exactly once and in order, within MaxAppendBytes per
// message, including the appends that span two chunks.
func TestSendAppendsAcrossChunks(t *testing.T) {
	const logChunk = defaultLogChunk
	env := &sendRecorder{}
	peers := []Peer{{ID: 1, Addr: "x"}, {ID: 2, Addr: "y"}, {ID: 3, Addr: "z"}}
	r := New(env, Config{ID: 1, Peers: peers, MaxAppendBytes: 97 * (32 + 10)}, &applyRecorder{}, Hooks{})
	r.term, r.role, r.leader = 1, Leader, 1
	r.log.reset(0, 0, 0)
	last := Index(3*logChunk + 17)
	for i := Index(1); i <= last; i++ {
		r.log.append(Entry{Index: i, Term: 1, Zxid: MakeZxid(1, uint32(i)), Type: EntryNormal, Data: make([]byte, 10)})
	}
	p := r.peerByID(2)
	p.conn, p.next, p.match, p.probing, p.inflight = 1, 1, 0, false, 0
	want := Index(1)
	for rounds := 0; want <= last; rounds++ {
		if rounds > int(last) {
			t.Fatalf("stuck at %d", want)
		}
		env.sent = env.sent[:0]
		r.sendAppends(p)
		for _, frame := range env.sent {
			m, err := decodeMessage(frame[4:])
			if err != nil {
				t.Fatalf("%v: %d bytes, type %d", err, len(frame), frame[4])
			}
			if m.typ != mApp || m.prevIndex != want-1 || len(m.entries) == 0 || len(m.entries) > 97 {
				t.Fatalf("append prev %d with %d entries, want prev %d", m.prevIndex, len(m.entries), want-1)
			}
			for _, e := range m.entries {
				if e.Index != want {
					t.Fatalf("got entry %d, want %d", e.Index, want)
				}
				want++
			}
		}
		p.match, p.inflight = want-1, 0 // every append acknowledged
	}
	if p.next != last+1 || len(r.appendBuf) != 0 {
		t.Fatalf("next %d, appendBuf %d entries", p.next, len(r.appendBuf))
	}
}
