package keeper

import (
	"errors"
	"fmt"

	"herd/node/jute"
)

// A log entry is one transaction. Writes are logged as the client's request
// (its jute body) plus what the ensemble must agree on to apply it the same
// way everywhere: the session, the connection and its write sequence number
// (for ordering and fencing), the caller's identities (for ACLs), the time
// (stamped by the leader), and who to answer. Every server applies every
// entry and computes the same result; the origin server answers its client.
//
//	request:       kind=1 | session | conn | seq | origin | nonce | req | time | ids | super | op | body
//	createSession: kind=2 | origin | nonce | req | time | timeout | passwd[16]
//	closeSession:  kind=3 | session          (expiry, decided by the leader)
//	reap:          kind=4 | path | time      (container/TTL deletion, by the leader)

const (
	txnRequest       byte = 1
	txnCreateSession byte = 2
	txnCloseSession  byte = 3
	txnReap          byte = 4
)

// txnOrigin says which server's client is waiting for an entry's result.
type txnOrigin struct {
	server uint64
	nonce  uint64 // the origin incarnation
	req    uint64
}

type txn struct {
	kind byte
	txnOrigin
	session int64
	conn    uint64
	seq     uint64
	time    int64
	ids     []jute.ID
	super   bool
	op      int32
	body    []byte
	timeout int32
	passwd  [16]byte
	path    string
}

func (x *txn) encode() []byte {
	// Sized for a request, ids included, so that the buffer never grows:
	// it is made for every write.
	size := 1 + 7*8 + 4 + 1 + 4 + len(x.body) + len(x.path) + 4
	for _, id := range x.ids {
		size += 8 + len(id.Scheme) + len(id.ID)
	}
	e := &jute.Encoder{B: make([]byte, 0, max(size, 64))}
	e.B = append(e.B, x.kind)
	switch x.kind {
	case txnRequest:
		e.Long(x.session)
		e.Long(int64(x.conn))
		e.Long(int64(x.seq))
		e.Long(int64(x.server))
		e.Long(int64(x.nonce))
		e.Long(int64(x.req))
		e.Long(x.time)
		e.Int(int32(len(x.ids)))
		for _, id := range x.ids {
			e.String(id.Scheme)
			e.String(id.ID)
		}
		e.Bool(x.super)
		e.Int(x.op)
		e.B = append(e.B, x.body...)
	case txnCreateSession:
		e.Long(int64(x.server))
		e.Long(int64(x.nonce))
		e.Long(int64(x.req))
		e.Long(x.time)
		e.Int(x.timeout)
		e.B = append(e.B, x.passwd[:]...)
	case txnCloseSession:
		e.Long(x.session)
	case txnReap:
		e.String(x.path)
		e.Long(x.time)
	}
	return e.B
}

var errBadTxn = errors.New("keeper: malformed log entry")

func decodeTxn(b []byte) (txn, error) {
	var x txn
	if len(b) == 0 {
		return x, errBadTxn
	}
	x.kind = b[0]
	d := jute.NewDecoder(b[1:])
	switch x.kind {
	case txnRequest:
		x.session = d.Long()
		x.conn = uint64(d.Long())
		x.seq = uint64(d.Long())
		x.server = uint64(d.Long())
		x.nonce = uint64(d.Long())
		x.req = uint64(d.Long())
		x.time = d.Long()
		n := d.Int()
		if n < 0 || int(n) > d.Remaining()/8 {
			return x, errBadTxn
		}
		for range n {
			x.ids = append(x.ids, jute.ID{Scheme: d.String(), ID: d.String()})
		}
		x.super = d.Bool()
		x.op = d.Int()
		if d.Err() != nil {
			return x, errBadTxn
		}
		x.body = b[len(b)-d.Remaining():]
		return x, nil
	case txnCreateSession:
		x.server = uint64(d.Long())
		x.nonce = uint64(d.Long())
		x.req = uint64(d.Long())
		x.time = d.Long()
		x.timeout = d.Int()
		if d.Err() != nil || d.Remaining() != 16 {
			return x, errBadTxn
		}
		copy(x.passwd[:], b[len(b)-16:])
		return x, nil
	case txnCloseSession:
		x.session = d.Long()
	case txnReap:
		x.path = d.String()
		x.time = d.Long()
	default:
		return x, errBadTxn
	}
	return x, d.Done()
}

// stampTime rewrites the time of an encoded entry in place, so the
// leader's clock (not the origin's) dates every change, as in ZooKeeper.
// Entries are the proposer's own (raft.Propose takes them over: the keeper
// encodes each once, and forwarded ones are decoded into fresh memory).
func stampTime(b []byte, now int64) []byte {
	var off int
	switch {
	case len(b) == 0:
		return b
	case b[0] == txnRequest:
		off = 1 + 6*8
	case b[0] == txnCreateSession:
		off = 1 + 3*8
	default:
		return b
	}
	if len(b) < off+8 {
		return b
	}
	e := &jute.Encoder{B: b[:off]}
	e.Long(now)
	return b
}

var opNames = map[int32]string{
	jute.OpCreate: "create", jute.OpDelete: "delete", jute.OpExists: "exists", jute.OpGetData: "getData",
	jute.OpSetData: "setData", jute.OpGetACL: "getACL", jute.OpSetACL: "setACL", jute.OpGetChildren: "getChildren",
	jute.OpSync: "sync", jute.OpPing: "ping", jute.OpGetChildren2: "getChildren2", jute.OpCheck: "check",
	jute.OpMulti: "multi", jute.OpCreate2: "create2", jute.OpReconfig: "reconfig", jute.OpCheckWatches: "checkWatches",
	jute.OpRemoveWatches: "removeWatches", jute.OpCreateContainer: "createContainer", jute.OpCreateTTL: "createTTL",
	jute.OpMultiRead: "multiRead", jute.OpAuth: "auth", jute.OpSetWatches: "setWatches", jute.OpGetEphemerals: "getEphemerals",
	jute.OpGetAllChildrenNumber: "getAllChildrenNumber", jute.OpSetWatches2: "setWatches2", jute.OpAddWatch: "addWatch",
	jute.OpWhoAmI: "whoAmI", jute.OpCloseSession: "closeSession",
}

func opName(op int32) string {
	if n, ok := opNames[op]; ok {
		return n
	}
	return fmt.Sprintf("op %d", op)
}
