// Package checker holds herd's history checkers: what clients were told,
// checked against what the system really holds. Porcupine models for the
// keeper and the broker's offset commits will live here too.
package checker

import (
	"bytes"
	"fmt"
	"slices"
)

// Entry is one record of an append-only log at a position (a byte offset or
// a record offset: the ledger only compares positions for equality and order).
type Entry struct {
	Off     int64
	Payload []byte
}

// LogLedger checks append-only logs against the history of their clients:
// every payload sent, and every (position, payload) acknowledged. Its checks
// are the durable-log invariants:
//
//   - lost write: an acknowledged record is missing at its position;
//   - inconsistent position: one position acknowledged for two records, or
//     holding a record other than the one acknowledged there;
//   - phantom/altered record: the log holds a payload nobody sent, which is
//     how a torn, corrupt or misdirected write shows up;
//   - disorder: positions not strictly increasing.
//
// Payloads must be unique per client request (retries may repeat one).
type LogLedger struct {
	logs map[string]*ledgerLog
}

type ledgerLog struct {
	sent  map[string]bool
	acked map[int64][]byte
}

// NewLogLedger returns an empty ledger.
func NewLogLedger() *LogLedger { return &LogLedger{logs: make(map[string]*ledgerLog)} }

func (l *LogLedger) log(name string) *ledgerLog {
	lg := l.logs[name]
	if lg == nil {
		lg = &ledgerLog{sent: make(map[string]bool), acked: make(map[int64][]byte)}
		l.logs[name] = lg
	}
	return lg
}

// Sent records that a client sent payload for the named log.
func (l *LogLedger) Sent(log string, payload []byte) { l.log(log).sent[string(payload)] = true }

// Acked records that the system acknowledged payload at off. It fails if off
// was already acknowledged for a different payload: an acknowledged record
// was overwritten.
func (l *LogLedger) Acked(log string, off int64, payload []byte) error {
	lg := l.log(log)
	if !lg.sent[string(payload)] {
		return fmt.Errorf("%s: acknowledgement at %d for a payload never sent (%.40q)", log, off, payload)
	}
	if prev, ok := lg.acked[off]; ok && !bytes.Equal(prev, payload) {
		return fmt.Errorf("%s: position %d acknowledged twice, for %.40q and then %.40q: an acknowledged record was overwritten",
			log, off, prev, payload)
	}
	lg.acked[off] = append([]byte(nil), payload...)
	return nil
}

// AckedCount is the number of distinct acknowledged positions of a log.
func (l *LogLedger) AckedCount(log string) int { return len(l.log(log).acked) }

// Check verifies a log's current content against the history.
func (l *LogLedger) Check(log string, entries []Entry) error {
	lg := l.log(log)
	at := make(map[int64][]byte, len(entries))
	for i, e := range entries {
		if i > 0 && e.Off <= entries[i-1].Off {
			return fmt.Errorf("%s: positions out of order: %d after %d", log, e.Off, entries[i-1].Off)
		}
		if !lg.sent[string(e.Payload)] {
			return fmt.Errorf("%s: record at %d holds %.40q, which no client sent: a torn, corrupt or misdirected write was read back as valid",
				log, e.Off, e.Payload)
		}
		at[e.Off] = e.Payload
	}
	offs := make([]int64, 0, len(lg.acked))
	for off := range lg.acked { // order-independent: sorted below
		offs = append(offs, off)
	}
	slices.Sort(offs)
	for _, off := range offs {
		want := lg.acked[off]
		got, ok := at[off]
		switch {
		case !ok:
			return fmt.Errorf("%s: acknowledged record %.40q at %d is lost (log has %d records)", log, want, off, len(entries))
		case !bytes.Equal(got, want):
			return fmt.Errorf("%s: position %d holds %.40q but %.40q was acknowledged there", log, off, got, want)
		}
	}
	return nil
}
