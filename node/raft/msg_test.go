package raft

import (
	"fmt"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// fieldsOf lists, per message type, the fields it carries on the wire; a
// field set on a message but missing from its encoding is a silent protocol
// bug (one hid the snapshot acknowledgement's match index once).
var fieldsOf = map[msgType][]string{
	mVote:          {"pre", "lastIndex", "lastTerm"},
	mVoteResp:      {"pre", "granted"},
	mApp:           {"prevIndex", "prevTerm", "commit", "commitTerm", "readSeq", "allHold", "entries"},
	mAppResp:       {"success", "match", "lastIndex", "lastTerm", "readSeq"},
	mSnap:          {"snapIndex", "snapTerm", "snapZxid", "offset", "total", "done", "data"},
	mSnapResp:      {"snapIndex", "offset", "success", "match"},
	mProp:          {"data"},
	mReadIndex:     {"ctx"},
	mReadIndexResp: {"ctx", "index", "ok"},
	mHost:          {"data"},
	mTermQuery:     {},
	mTermResp:      {},
	mPeerAck:       {"match"},
}

// setters draw a value for each named field.
var setters = map[string]func(m *message, t *rapid.T){
	"pre":        func(m *message, t *rapid.T) { m.pre = rapid.Bool().Draw(t, "pre") },
	"granted":    func(m *message, t *rapid.T) { m.granted = rapid.Bool().Draw(t, "granted") },
	"success":    func(m *message, t *rapid.T) { m.success = rapid.Bool().Draw(t, "success") },
	"done":       func(m *message, t *rapid.T) { m.done = rapid.Bool().Draw(t, "done") },
	"ok":         func(m *message, t *rapid.T) { m.ok = rapid.Bool().Draw(t, "ok") },
	"lastIndex":  func(m *message, t *rapid.T) { m.lastIndex = Index(rapid.Uint64().Draw(t, "lastIndex")) },
	"lastTerm":   func(m *message, t *rapid.T) { m.lastTerm = Term(rapid.Uint64().Draw(t, "lastTerm")) },
	"prevIndex":  func(m *message, t *rapid.T) { m.prevIndex = Index(rapid.Uint64().Draw(t, "prevIndex")) },
	"prevTerm":   func(m *message, t *rapid.T) { m.prevTerm = Term(rapid.Uint64().Draw(t, "prevTerm")) },
	"commit":     func(m *message, t *rapid.T) { m.commit = Index(rapid.Uint64().Draw(t, "commit")) },
	"commitTerm": func(m *message, t *rapid.T) { m.commitTerm = Term(rapid.Uint64().Draw(t, "commitTerm")) },
	"readSeq":    func(m *message, t *rapid.T) { m.readSeq = rapid.Uint64().Draw(t, "readSeq") },
	"allHold":    func(m *message, t *rapid.T) { m.allHold = Index(rapid.Uint64().Draw(t, "allHold")) },
	"match":      func(m *message, t *rapid.T) { m.match = Index(rapid.Uint64().Draw(t, "match")) },
	"snapIndex":  func(m *message, t *rapid.T) { m.snapIndex = Index(rapid.Uint64().Draw(t, "snapIndex")) },
	"snapTerm":   func(m *message, t *rapid.T) { m.snapTerm = Term(rapid.Uint64().Draw(t, "snapTerm")) },
	"snapZxid":   func(m *message, t *rapid.T) { m.snapZxid = Zxid(rapid.Uint64().Draw(t, "snapZxid")) },
	"offset":     func(m *message, t *rapid.T) { m.offset = rapid.Uint64().Draw(t, "offset") },
	"total":      func(m *message, t *rapid.T) { m.total = rapid.Uint64().Draw(t, "total") },
	"ctx":        func(m *message, t *rapid.T) { m.ctx = rapid.Uint64().Draw(t, "ctx") },
	"index":      func(m *message, t *rapid.T) { m.index = Index(rapid.Uint64().Draw(t, "index")) },
	"data":       func(m *message, t *rapid.T) { m.data = rapid.SliceOf(rapid.Byte()).Draw(t, "data") },
	"entries": func(m *message, t *rapid.T) {
		for i := range rapid.IntRange(0, 5).Draw(t, "n") {
			m.entries = append(m.entries, Entry{Index: Index(i + 1), Term: Term(rapid.Uint32().Draw(t, "t")), Zxid: Zxid(rapid.Uint64().Draw(t, "z")),
				Type: EntryType(rapid.IntRange(1, 3).Draw(t, "et")), Data: rapid.SliceOf(rapid.Byte()).Draw(t, "d")})
		}
	},
}

func genMessage(t *rapid.T) message {
	typ := msgType(rapid.IntRange(int(mVote), int(mPeerAck)).Draw(t, "type"))
	m := message{typ: typ, from: ID(rapid.Uint64().Draw(t, "from")), term: Term(rapid.Uint64().Draw(t, "term"))}
	for _, name := range fieldsOf[typ] {
		setters[name](&m, t)
	}
	return m
}

func TestMessageRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t)
		frame := m.encode(nil)
		if len(frame) > m.encodedSizeBound() {
			t.Fatalf("%v: %d bytes encoded, bound %d", m.typ, len(frame), m.encodedSizeBound())
		}
		got, err := decodeMessage(frame[4:])
		if err != nil {
			t.Fatalf("%v: %v", m.typ, err)
		}
		// Normalise empty slices: nil and empty encode alike.
		for _, x := range []*message{&m, &got} {
			if len(x.data) == 0 {
				x.data = nil
			}
			if len(x.entries) == 0 {
				x.entries = nil
			}
			for i := range x.entries {
				if len(x.entries[i].Data) == 0 {
					x.entries[i].Data = nil
				}
			}
		}
		if !reflect.DeepEqual(m, got) {
			t.Fatalf("round trip of %v:\n sent %+v\n got  %+v", m.typ, m, got)
		}
	})
}

// Truncated or padded frames are rejected, never mis-parsed or a panic.
func TestMessageRejectsDamage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		m := genMessage(t)
		body := m.encode(nil)[4:]
		cut := rapid.IntRange(0, len(body)-1).Draw(t, "cut")
		if _, err := decodeMessage(body[:cut]); err == nil && m.typ != mProp && m.typ != mSnap && m.typ != mHost {
			t.Fatalf("%v truncated to %d of %d bytes decoded without error", m.typ, cut, len(body))
		}
		if _, err := decodeMessage(append(body[:len(body):len(body)], 0)); err == nil && m.typ != mProp && m.typ != mSnap && m.typ != mHost {
			t.Fatalf("%v with a trailing byte decoded without error", m.typ)
		}
	})
}

func FuzzDecodeMessage(f *testing.F) {
	m := message{typ: mApp, from: 1, term: 2, entries: []Entry{{Index: 1, Term: 2, Zxid: 3, Type: EntryNormal, Data: []byte("x")}}}
	f.Add(m.encode(nil)[4:])
	f.Fuzz(func(t *testing.T, body []byte) {
		_, _ = decodeMessage(body)
	})
}

// TestDecodeAppendAllocations: decoding an append copies its entries' data
// in one allocation (it was one per entry), and no entry's data can grow
// into its neighbour's.
func TestDecodeAppendAllocations(t *testing.T) {
	m := message{typ: mApp, from: 1, term: 2}
	for i := range 20 {
		m.entries = append(m.entries, Entry{Index: Index(i + 1), Term: 2, Zxid: MakeZxid(2, uint32(i+1)), Type: EntryNormal, Data: []byte(fmt.Sprintf("entry %d", i))})
	}
	frame := m.encode(nil)
	if n := testing.AllocsPerRun(100, func() { decodeMessage(frame[4:]) }); n != 2 {
		t.Fatalf("%v allocations to decode an append of 20 entries, want 2 (entries, data)", n)
	}
	got, err := decodeMessage(frame[4:])
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got.entries[0].Data, 'X')
	if string(got.entries[1].Data) != "entry 1" {
		t.Fatalf("appending to one entry's data changed the next: %q", got.entries[1].Data)
	}
}
