package keeper

import (
	"herd/node/jute"
	"herd/node/raft"
)

// outcome is what applying one log entry did.
type outcome struct {
	txn    txn
	err    int32  // the reply header's err
	resp   []byte // the reply body (jute), computed only for the origin
	events []event
	// sessionCreated/sessionClosed name sessions that came or went.
	sessionCreated int64
	sessionClosed  int64
	// fenced: the write was refused to keep the session's writes in order
	// (a lost earlier write, or a newer connection took the session over).
	// The origin drops the client connection instead of answering.
	fenced bool
}

// sessionIDFor derives a session id from the zxid that created it: unique
// across restarts and leaders, because zxids are. The origin server's id in
// the top byte makes it look like ZooKeeper's.
func sessionIDFor(origin uint64, zxid raft.Zxid) int64 {
	return int64(origin<<56) | int64(uint64(zxid)&(1<<56-1))
}

// apply applies one committed entry. mine says whether this server must
// answer its origin, so the response is encoded only there.
func (t *Tree) apply(e *raft.Entry, cfg *treeConfig, mine func(txnOrigin) bool) outcome {
	t.zxid = int64(e.Zxid)
	var out outcome
	if e.Type != raft.EntryNormal {
		return out
	}
	x, err := decodeTxn(e.Data)
	if err != nil {
		// Entries are written by servers, never taken from the network
		// unchecked; a bad one is a bug, and every server skips it alike.
		out.err = jute.ErrMarshallingError
		return out
	}
	out.txn = x
	want := mine(x.txnOrigin)
	switch x.kind {
	case txnCreateSession:
		id := sessionIDFor(x.server, e.Zxid)
		t.createSession(id, x.timeout, x.passwd)
		out.sessionCreated = id
	case txnCloseSession:
		if t.closeSession(x.session, int64(e.Zxid), &out.events, cfg.keepEphemerals) {
			out.sessionClosed = x.session
		}
	case txnReap:
		if n := t.lookup(x.path); n != nil && n.children.len() == 0 &&
			((n.kind == kindContainer && n.creates > 0) || (n.kind == kindTTL && x.time-n.mtime > t.timed[n])) {
			t.removeNode(n, int64(e.Zxid), &out.events, nil)
		}
	case txnRequest:
		t.applyRequest(&x, e, cfg, want, &out)
	}
	return out
}

func (t *Tree) applyRequest(x *txn, e *raft.Entry, cfg *treeConfig, want bool, out *outcome) {
	s := t.sessions[x.session]
	if s == nil {
		out.err = jute.ErrSessionExpired
		return
	}
	switch {
	case x.conn != s.conn && x.seq == 1:
		// A new connection's first write: it takes the session over.
		s.conn, s.next, s.broken = x.conn, 1, false
	case x.conn != s.conn:
		out.err, out.fenced = jute.ErrSessionMoved, true
		return
	}
	if s.broken || x.seq != s.next {
		s.broken = true
		out.err, out.fenced = jute.ErrConnectionLoss, true
		return
	}
	s.next++

	c := &caller{session: x.session, ids: x.ids, super: x.super, zxid: int64(e.Zxid), time: x.time}
	d := jute.NewDecoder(x.body)
	enc := func(rec interface{ Encode(*jute.Encoder) }) {
		if want {
			en := &jute.Encoder{}
			rec.Encode(en)
			out.resp = en.B
		}
	}
	switch x.op {
	case jute.OpCreate, jute.OpCreate2, jute.OpCreateContainer, jute.OpCreateTTL:
		r := createOp{op: x.op, ttl: -1}
		if x.op == jute.OpCreateTTL {
			var req jute.CreateTTLRequest
			req.Decode(d)
			r.path, r.data, r.acl, r.flags, r.ttl = req.Path, req.Data, req.ACL, req.Flags, req.TTL
		} else {
			var req jute.CreateRequest
			req.Decode(d)
			r.path, r.data, r.acl, r.flags = req.Path, req.Data, req.ACL, req.Flags
		}
		if x.op == jute.OpCreateContainer && r.flags != jute.ModeContainer {
			out.err = jute.ErrBadArguments
			return
		}
		path, n, code := t.create(c, cfg, &r, &out.events, nil)
		out.err = code
		if code == jute.ErrOK {
			if x.op == jute.OpCreate {
				enc(&jute.CreateResponse{Path: path})
			} else {
				enc(&jute.Create2Response{Path: path, Stat: n.stat()})
			}
		}
	case jute.OpDelete:
		var req jute.DeleteRequest
		req.Decode(d)
		out.err = t.delete(c, req.Path, req.Version, &out.events, nil)
	case jute.OpSetData:
		var req jute.SetDataRequest
		req.Decode(d)
		n, code := t.setData(c, cfg, req.Path, req.Data, req.Version, &out.events, nil)
		out.err = code
		if code == jute.ErrOK {
			st := n.stat()
			enc(&st)
		}
	case jute.OpSetACL:
		var req jute.SetACLRequest
		req.Decode(d)
		n, code := t.setACL(c, req.Path, req.ACL, req.Version)
		out.err = code
		if code == jute.ErrOK {
			st := n.stat()
			enc(&st)
		}
	case jute.OpMulti:
		ops, err := jute.DecodeMulti(d, false)
		if err != nil {
			out.err = jute.ErrMarshallingError
			return
		}
		results := t.multi(c, cfg, ops, &out.events)
		if want {
			en := &jute.Encoder{}
			jute.EncodeMultiResponse(en, results)
			out.resp = en.B
		}
	case jute.OpCloseSession:
		if t.closeSession(x.session, int64(e.Zxid), &out.events, cfg.keepEphemerals) {
			out.sessionClosed = x.session
		}
	default:
		out.err = jute.ErrUnimplemented
	}
}

// multi applies ops all or nothing. On failure everything is undone and the
// results say so per op (ZooKeeper's encoding: ops before the failing one
// report error 0, the failing one its code, later ones
// RuntimeInconsistency); the reply header's err stays 0 either way.
func (t *Tree) multi(c *caller, cfg *treeConfig, ops []jute.MultiOp, ev *[]event) []jute.MultiResult {
	var undo []func()
	var evs []event
	results := make([]jute.MultiResult, len(ops))
	failed, failCode := -1, int32(0)
	for i, op := range ops {
		var code int32
		switch op.Type {
		case jute.OpCreate, jute.OpCreate2, jute.OpCreateContainer, jute.OpCreateTTL:
			r := createOp{op: op.Type, path: op.Create.Path, data: op.Create.Data, acl: op.Create.ACL, flags: op.Create.Flags, ttl: -1}
			if op.Type == jute.OpCreateTTL {
				r.ttl = op.Create.TTL
			}
			var path string
			path, _, code = t.create(c, cfg, &r, &evs, &undo)
			// ZooKeeper 3.8 answers every create in a multi as a plain
			// create (type 1, path only); kazoo and go-zookeeper parse
			// nothing else.
			results[i] = jute.MultiResult{Type: jute.OpCreate, Path: path}
		case jute.OpDelete:
			code = t.delete(c, op.Delete.Path, op.Delete.Version, &evs, &undo)
			results[i] = jute.MultiResult{Type: jute.OpDelete}
		case jute.OpSetData:
			var n *znode
			n, code = t.setData(c, cfg, op.SetData.Path, op.SetData.Data, op.SetData.Version, &evs, &undo)
			if code == jute.ErrOK {
				st := n.stat()
				results[i] = jute.MultiResult{Type: jute.OpSetData, Stat: &st}
			}
		case jute.OpCheck:
			code = t.check(c, op.Check.Path, op.Check.Version)
			results[i] = jute.MultiResult{Type: jute.OpCheck}
		default:
			code = jute.ErrUnimplemented
		}
		if code != jute.ErrOK {
			failed, failCode = i, code
			break
		}
	}
	if failed < 0 {
		*ev = append(*ev, evs...)
		return results
	}
	for j := len(undo) - 1; j >= 0; j-- {
		undo[j]()
	}
	for i := range results {
		code := int32(jute.ErrOK)
		switch {
		case i == failed:
			code = failCode
		case i > failed:
			code = jute.ErrRuntimeInconsistency
		}
		results[i] = jute.MultiResult{Type: jute.OpError, Err: code}
	}
	return results
}
