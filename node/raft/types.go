// Package raft is the keeper ensemble's replicated log: Raft with pre-vote
// and check-quorum, written on herd's sans-I/O contract so that every
// election, append and fsync replays exactly in the simulator.
//
// A Raft is a component, not a node.Machine: its host core (the keeper, or
// the replog test service) owns the node and hands it the events that belong
// to it (Handle): its peer connections, its timers (names starting "raft/"),
// and the disk operations it submitted. Committed entries come back through
// the StateMachine; everything else through Hooks.
//
// Why Raft and not ZAB: Raft's election restriction gives leader
// completeness by construction, pre-vote and check-quorum keep a partitioned
// or one-way-connected node from disrupting a healthy leader, and ReadIndex
// gives the linearizable sync the keeper promises. ZooKeeper's zxid maps onto
// it directly: the epoch is the Raft term and the counter counts the leader's
// entries within its term (its first entry, a no-op, is counter 1).
package raft

import (
	"fmt"
)

// ID identifies a server (ZooKeeper's myid). 0 is "none".
type ID uint64

// Index is a log position, starting at 1. Term is an election term, which is
// also the zxid epoch, so it must fit in 32 bits.
type (
	Index uint64
	Term  uint64
)

// MaxTerm is the largest term a zxid can carry.
const MaxTerm = Term(1<<32 - 1)

// Zxid is ZooKeeper's transaction id: epoch (term) in the high 32 bits, a
// counter within the epoch in the low 32 bits.
type Zxid uint64

// MakeZxid builds a zxid.
func MakeZxid(t Term, counter uint32) Zxid { return Zxid(uint64(t)<<32 | uint64(counter)) }

// Epoch is the zxid's term.
func (z Zxid) Epoch() Term { return Term(z >> 32) }

// Counter is the zxid's counter within its epoch.
func (z Zxid) Counter() uint32 { return uint32(z) }

func (z Zxid) String() string { return fmt.Sprintf("0x%x", uint64(z)) }

// EntryType distinguishes log entries.
type EntryType uint8

const (
	// EntryNormal carries state-machine data.
	EntryNormal EntryType = iota + 1
	// EntryNoop is a new leader's first entry: committing it commits
	// everything before it (Raft §5.4.2) and lets ReadIndex start.
	EntryNoop
	// EntryConfig is reserved for membership changes (not implemented:
	// membership is static, from configuration).
	EntryConfig
)

// Entry is one log entry.
type Entry struct {
	Index Index
	Term  Term
	Zxid  Zxid
	Type  EntryType
	Data  []byte
}

func (e Entry) String() string {
	return fmt.Sprintf("%d/%d(%v,%dB)", e.Index, e.Term, e.Zxid, len(e.Data))
}

// Peer is a member of the ensemble.
type Peer struct {
	ID   ID
	Addr string // raft peer address, "host:port"
}

// Role is a server's role in its current term.
type Role uint8

const (
	Follower Role = iota + 1
	PreCandidate
	Candidate
	Leader
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case PreCandidate:
		return "pre-candidate"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return "recovering"
}
