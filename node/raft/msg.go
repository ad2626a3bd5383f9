package raft

import (
	"encoding/binary"
	"errors"
)

// Peer messages travel over TCP connections, one frame (package frame) per
// message. Every message carries its sender and the sender's term, so any
// connection may carry any message; each server sends on the connection it
// dialed to the receiver and reads from the ones it accepted.

type msgType uint8

const (
	mVote          msgType = iota + 1 // (pre-)vote request
	mVoteResp                         // (pre-)vote answer
	mApp                              // append entries / heartbeat
	mAppResp                          // append answer
	mSnap                             // a chunk of an install-snapshot
	mSnapResp                         // snapshot chunk answer
	mProp                             // a proposal forwarded to the leader
	mReadIndex                        // a follower asks the leader for a read index
	mReadIndexResp                    // the leader's answer
	mHost                             // a message between hosts (not replicated)
	mTermQuery                        // a server that lost its term asks for the receiver's
	mTermResp                         // the receiver's current term
	mPeerAck                          // a follower tells its fellow followers what it holds durably
)

func (t msgType) String() string {
	names := [...]string{"?", "vote", "vote-resp", "app", "app-resp", "snap", "snap-resp", "prop", "read-index", "read-index-resp", "host", "term-query", "term-resp", "peer-ack"}
	if int(t) < len(names) {
		return names[t]
	}
	return "?"
}

// message is the union of all peer messages; each type uses some fields.
type message struct {
	typ  msgType
	from ID
	term Term

	// mVote, mVoteResp
	pre     bool
	granted bool
	// mVote: the candidate's last entry; mAppResp: the follower's last entry
	// on a rejection (a hint for the leader's next probe)
	lastIndex Index
	lastTerm  Term

	// mApp
	prevIndex Index
	prevTerm  Term
	commit    Index
	// commitTerm is the term of the entry at commit on the leader; an
	// abstaining follower resumes voting once it holds a commit point of the
	// leader's own term (see Raft.abstain).
	commitTerm Term
	readSeq    uint64 // mApp, mAppResp: ReadIndex round
	// allHold: every server holds the leader's log up to here durably
	// (Raft.trimLog).
	allHold Index
	entries []Entry

	// mAppResp, mSnapResp, mPeerAck
	success bool
	match   Index

	// mSnap, mSnapResp
	snapIndex Index
	snapTerm  Term
	snapZxid  Zxid
	offset    uint64
	total     uint64
	done      bool

	// mProp, mSnap
	data []byte

	// mReadIndex, mReadIndexResp
	ctx   uint64
	index Index
	ok    bool
}

// maxMessage bounds one frame: a batch of entries or a snapshot chunk plus
// headers.
const maxMessage = 16 << 20

func appendU64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// encode appends m as one frame.
// encodedSizeBound is at least the size of m's encoding.
func (m *message) encodedSizeBound() int {
	n := 5 + 16 + 64 + len(m.data)
	for i := range m.entries {
		n += 29 + len(m.entries[i].Data)
	}
	return n
}

func (m *message) encode(dst []byte) []byte {
	if dst == nil {
		// One allocation of the right size: growing an append message of
		// many entries step by step was a tenth of a busy leader's CPU.
		dst = make([]byte, 0, m.encodedSizeBound())
	}
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, byte(m.typ))
	dst = appendU64(dst, uint64(m.from))
	dst = appendU64(dst, uint64(m.term))
	switch m.typ {
	case mVote:
		dst = appendBool(dst, m.pre)
		dst = appendU64(dst, uint64(m.lastIndex))
		dst = appendU64(dst, uint64(m.lastTerm))
	case mVoteResp:
		dst = appendBool(dst, m.pre)
		dst = appendBool(dst, m.granted)
	case mApp:
		dst = appendU64(dst, uint64(m.prevIndex))
		dst = appendU64(dst, uint64(m.prevTerm))
		dst = appendU64(dst, uint64(m.commit))
		dst = appendU64(dst, uint64(m.commitTerm))
		dst = appendU64(dst, m.readSeq)
		dst = appendU64(dst, uint64(m.allHold))
		dst = binary.BigEndian.AppendUint32(dst, uint32(len(m.entries)))
		for i := range m.entries {
			e := &m.entries[i]
			dst = appendU64(dst, uint64(e.Index))
			dst = appendU64(dst, uint64(e.Term))
			dst = appendU64(dst, uint64(e.Zxid))
			dst = append(dst, byte(e.Type))
			dst = binary.BigEndian.AppendUint32(dst, uint32(len(e.Data)))
			dst = append(dst, e.Data...)
		}
	case mAppResp:
		dst = appendBool(dst, m.success)
		dst = appendU64(dst, uint64(m.match))
		dst = appendU64(dst, uint64(m.lastIndex))
		dst = appendU64(dst, uint64(m.lastTerm))
		dst = appendU64(dst, m.readSeq)
	case mPeerAck:
		dst = appendU64(dst, uint64(m.match))
	case mSnap:
		dst = appendU64(dst, uint64(m.snapIndex))
		dst = appendU64(dst, uint64(m.snapTerm))
		dst = appendU64(dst, uint64(m.snapZxid))
		dst = appendU64(dst, m.offset)
		dst = appendU64(dst, m.total)
		dst = appendBool(dst, m.done)
		dst = append(dst, m.data...)
	case mSnapResp:
		dst = appendU64(dst, uint64(m.snapIndex))
		dst = appendU64(dst, m.offset)
		dst = appendBool(dst, m.success)
		dst = appendU64(dst, uint64(m.match))
	case mProp, mHost:
		dst = append(dst, m.data...)
	case mReadIndex:
		dst = appendU64(dst, m.ctx)
	case mReadIndexResp:
		dst = appendU64(dst, m.ctx)
		dst = appendU64(dst, uint64(m.index))
		dst = appendBool(dst, m.ok)
	}
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

var errBadMessage = errors.New("raft: malformed peer message")

// reader consumes a frame body field by field; the first short read sets err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.err = errBadMessage
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.err = errBadMessage
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) bool() bool {
	if len(r.b) < 1 {
		r.err = errBadMessage
		return false
	}
	v := r.b[0] != 0
	r.b = r.b[1:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.err = errBadMessage
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// decodeMessage parses a frame body. Data and entry payloads are copied: the
// frame buffer is reused.
// appendDataSize sums the data lengths of an append's n encoded entries in
// b, as far as they are well formed (decoding checks them properly).
func appendDataSize(b []byte, n int) int {
	const header = 3*8 + 1 + 4 // index, term, zxid, type, data length
	total := 0
	for ; n > 0 && len(b) >= header; n-- {
		l := int(binary.BigEndian.Uint32(b[header-4:]))
		if l > len(b)-header {
			break
		}
		total += l
		b = b[header+l:]
	}
	return total
}

func decodeMessage(body []byte) (message, error) {
	var m message
	if len(body) < 17 {
		return m, errBadMessage
	}
	m.typ = msgType(body[0])
	r := reader{b: body[1:]}
	m.from = ID(r.u64())
	m.term = Term(r.u64())
	switch m.typ {
	case mVote:
		m.pre = r.bool()
		m.lastIndex = Index(r.u64())
		m.lastTerm = Term(r.u64())
	case mVoteResp:
		m.pre = r.bool()
		m.granted = r.bool()
	case mApp:
		m.prevIndex = Index(r.u64())
		m.prevTerm = Term(r.u64())
		m.commit = Index(r.u64())
		m.commitTerm = Term(r.u64())
		m.readSeq = r.u64()
		m.allHold = Index(r.u64())
		n := int(r.u32())
		if n > len(r.b)/29 { // each entry has at least 29 bytes of header
			return m, errBadMessage
		}
		m.entries = make([]Entry, 0, n)
		// One copy of all the entries' data (an allocation per entry was
		// most of what a follower spent decoding appends); each entry's
		// Data is a capacity-capped window of it.
		arena := make([]byte, 0, appendDataSize(r.b, n))
		for range n {
			e := Entry{Index: Index(r.u64()), Term: Term(r.u64()), Zxid: Zxid(r.u64())}
			if len(r.b) > 0 {
				e.Type = EntryType(r.b[0])
				r.b = r.b[1:]
			}
			if d := r.bytes(int(r.u32())); len(d) > 0 {
				if len(d) > cap(arena)-len(arena) {
					r.err = errBadMessage // appendDataSize disagrees: cannot be
					break
				}
				start := len(arena)
				arena = append(arena, d...)
				e.Data = arena[start:len(arena):len(arena)]
			}
			if e.Type < EntryNormal || e.Type > EntryConfig {
				r.err = errBadMessage
			}
			m.entries = append(m.entries, e)
		}
	case mAppResp:
		m.success = r.bool()
		m.match = Index(r.u64())
		m.lastIndex = Index(r.u64())
		m.lastTerm = Term(r.u64())
		m.readSeq = r.u64()
	case mPeerAck:
		m.match = Index(r.u64())
	case mSnap:
		m.snapIndex = Index(r.u64())
		m.snapTerm = Term(r.u64())
		m.snapZxid = Zxid(r.u64())
		m.offset = r.u64()
		m.total = r.u64()
		m.done = r.bool()
		m.data = append([]byte(nil), r.b...)
		r.b = nil
	case mSnapResp:
		m.snapIndex = Index(r.u64())
		m.offset = r.u64()
		m.success = r.bool()
		m.match = Index(r.u64())
	case mProp, mHost:
		m.data = append([]byte(nil), r.b...)
		r.b = nil
	case mReadIndex:
		m.ctx = r.u64()
	case mReadIndexResp:
		m.ctx = r.u64()
		m.index = Index(r.u64())
		m.ok = r.bool()
	case mTermQuery, mTermResp:
	default:
		return m, errBadMessage
	}
	if r.err != nil || len(r.b) != 0 {
		return m, errBadMessage
	}
	return m, nil
}
