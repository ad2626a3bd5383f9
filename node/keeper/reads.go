package keeper

import (
	"strings"

	"herd/node/jute"
)

// read executes a read-side request at the head of its connection's queue
// and stores its reply frame.
func (s *Server) read(c *conn, r *request) {
	code, body := s.readOp(c, r.op, r.body)
	if code == jute.ErrMarshallingError {
		s.drop(c, "malformed "+opName(r.op)+" request")
		return
	}
	r.code, r.resp, r.framed = code, body, body != nil
}

// replyHeaderLen is the length prefix and ReplyHeader (xid, zxid, err) of a
// reply frame.
const replyHeaderLen = 4 + 4 + 8 + 4

// statLen is an encoded Stat's size.
const statLen = 8*4 + 4*3 + 8 + 4*2 + 8

// bodyEncoder starts a read's reply body after room for the reply header, so
// that pump stamps the header in place and the frame is one allocation
// (a get at sixteen outstanding requests spent a tenth of a server's CPU
// growing, then copying, its body). size is a capacity hint for the body.
func bodyEncoder(size int) *jute.Encoder {
	return &jute.Encoder{B: make([]byte, replyHeaderLen, replyHeaderLen+max(size, 64))}
}

// framedBody encodes rec with bodyEncoder. Every non-nil body readOp returns
// is built so (read marks the request framed).
func framedBody(rec jute.Record, size int) []byte {
	e := bodyEncoder(size)
	rec.Encode(e)
	return e.B
}

// callerOf describes a connection to the ACL checks.
func callerOf(c *conn) *caller { return &caller{session: c.session, ids: c.ids, super: c.super} }

func (s *Server) readOp(c *conn, op int32, body []byte) (int32, []byte) {
	t := s.tree
	d := jute.NewDecoder(body)
	bad := func() (int32, []byte) { return jute.ErrMarshallingError, nil }
	switch op {
	case jute.OpExists:
		var req jute.ExistsRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		if jute.ValidatePath(req.Path, false) != nil {
			return jute.ErrBadArguments, nil
		}
		// The watch is set even when the node does not exist: it fires on
		// its creation.
		if req.Watch {
			s.watches.add(wData, req.Path, c.id)
		}
		n := t.lookup(req.Path)
		if n == nil {
			return jute.ErrNoNode, nil
		}
		st := n.stat()
		return jute.ErrOK, framedBody(&st, statLen)
	case jute.OpGetData:
		var req jute.GetDataRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		code, resp := s.getData(c, req.Path, req.Watch)
		if code != jute.ErrOK {
			return code, nil
		}
		return code, framedBody(resp, 4+len(resp.Data)+statLen)
	case jute.OpGetACL:
		var req jute.GetACLRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		if jute.ValidatePath(req.Path, false) != nil {
			return jute.ErrBadArguments, nil
		}
		n := t.lookup(req.Path)
		if n == nil {
			return jute.ErrNoNode, nil
		}
		cl := callerOf(c)
		if !permitted(t.acls.get(n.acl), cl, jute.PermRead|jute.PermAdmin) {
			return jute.ErrNoAuth, nil
		}
		return jute.ErrOK, framedBody(&jute.GetACLResponse{ACL: t.getACL(cl, n), Stat: n.stat()}, 0)
	case jute.OpGetChildren, jute.OpGetChildren2:
		var req jute.GetChildrenRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		code, children, st := s.getChildren(c, req.Path, req.Watch)
		if code != jute.ErrOK {
			return code, nil
		}
		if op == jute.OpGetChildren {
			return code, framedBody(&jute.GetChildrenResponse{Children: children}, 0)
		}
		return code, framedBody(&jute.GetChildren2Response{Children: children, Stat: st}, 0)
	case jute.OpGetEphemerals:
		var req jute.GetEphemeralsRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		return jute.ErrOK, framedBody(&jute.GetEphemeralsResponse{Ephemerals: orEmpty(t.ephemeralsOf(c.session, req.PrefixPath))}, 0)
	case jute.OpGetAllChildrenNumber:
		var req jute.GetAllChildrenNumberRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		if jute.ValidatePath(req.Path, false) != nil {
			return jute.ErrBadArguments, nil
		}
		n := t.lookup(req.Path)
		if n == nil {
			return jute.ErrNoNode, nil
		}
		if !permitted(t.acls.get(n.acl), callerOf(c), jute.PermRead) {
			return jute.ErrNoAuth, nil
		}
		return jute.ErrOK, framedBody(&jute.GetAllChildrenNumberResponse{TotalNumber: descendants(n)}, 0)
	case jute.OpMultiRead:
		ops, err := jute.DecodeMulti(d, true)
		if err != nil || d.Done() != nil {
			return bad()
		}
		results := make([]jute.MultiResult, len(ops))
		for i, o := range ops {
			switch o.Type {
			case jute.OpGetData:
				code, resp := s.getData(c, o.GetData.Path, false)
				if code != jute.ErrOK {
					results[i] = jute.MultiResult{Type: jute.OpError, Err: code}
					continue
				}
				st := resp.Stat
				results[i] = jute.MultiResult{Type: jute.OpGetData, Data: resp.Data, Stat: &st}
			case jute.OpGetChildren:
				code, children, _ := s.getChildren(c, o.GetChildren.Path, false)
				if code != jute.ErrOK {
					results[i] = jute.MultiResult{Type: jute.OpError, Err: code}
					continue
				}
				results[i] = jute.MultiResult{Type: jute.OpGetChildren, Children: children}
			}
		}
		e := bodyEncoder(0)
		jute.EncodeMultiResponse(e, results)
		return jute.ErrOK, e.B
	case jute.OpWhoAmI:
		var infos []jute.ClientInfo
		for _, id := range c.ids {
			user := id.ID
			if id.Scheme == "digest" {
				user, _, _ = strings.Cut(id.ID, ":")
			}
			infos = append(infos, jute.ClientInfo{AuthScheme: id.Scheme, User: user})
		}
		if c.super {
			infos = append(infos, jute.ClientInfo{AuthScheme: "super", User: "super"})
		}
		return jute.ErrOK, framedBody(&jute.WhoAmIResponse{ClientInfo: infos}, 0)
	case jute.OpCheckWatches, jute.OpRemoveWatches:
		var req jute.RemoveWatchesRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		var kinds []watchKind
		switch req.Type {
		case jute.WatcherChildren:
			kinds = []watchKind{wChild}
		case jute.WatcherData:
			kinds = []watchKind{wData}
		case jute.WatcherAny:
			kinds = []watchKind{wData, wChild, wPersistent, wRecursive}
		default:
			return jute.ErrBadArguments, nil
		}
		found := false
		for _, k := range kinds {
			if op == jute.OpRemoveWatches {
				found = s.watches.remove(k, req.Path, c.id) || found
			} else {
				found = found || s.watches.has(k, req.Path, c.id)
			}
		}
		if !found {
			return jute.ErrNoWatcher, nil
		}
		return jute.ErrOK, nil
	case jute.OpAddWatch:
		var req jute.AddWatchRequest
		if req.Decode(d); d.Done() != nil {
			return bad()
		}
		if jute.ValidatePath(req.Path, false) != nil {
			return jute.ErrBadArguments, nil
		}
		switch req.Mode {
		case jute.AddWatchPersistent:
			s.watches.add(wPersistent, req.Path, c.id)
		case jute.AddWatchPersistentRecursive:
			s.watches.add(wRecursive, req.Path, c.id)
		default:
			return jute.ErrBadArguments, nil
		}
		return jute.ErrOK, framedBody(&jute.ErrorResponse{Err: 0}, 0)
	case jute.OpSetWatches, jute.OpSetWatches2:
		var req jute.SetWatches2
		if op == jute.OpSetWatches {
			var old jute.SetWatches
			old.Decode(d)
			req = jute.SetWatches2{RelativeZxid: old.RelativeZxid, DataWatches: old.DataWatches, ExistWatches: old.ExistWatches, ChildWatches: old.ChildWatches}
		} else {
			req.Decode(d)
		}
		if d.Done() != nil {
			return bad()
		}
		s.setWatches(c, &req)
		return jute.ErrOK, nil
	}
	return jute.ErrUnimplemented, nil
}

func orEmpty(v []string) []string {
	if v == nil {
		return []string{}
	}
	return v
}

func (s *Server) getData(c *conn, path string, watch bool) (int32, *jute.GetDataResponse) {
	t := s.tree
	if jute.ValidatePath(path, false) != nil {
		return jute.ErrBadArguments, nil
	}
	n := t.lookup(path)
	if n == nil {
		return jute.ErrNoNode, nil // no watch on a missing node for getData
	}
	if !permitted(t.acls.get(n.acl), callerOf(c), jute.PermRead) {
		return jute.ErrNoAuth, nil
	}
	if watch {
		s.watches.add(wData, path, c.id)
	}
	return jute.ErrOK, &jute.GetDataResponse{Data: n.data(), Stat: n.stat()}
}

func (s *Server) getChildren(c *conn, path string, watch bool) (int32, []string, jute.Stat) {
	t := s.tree
	if jute.ValidatePath(path, false) != nil {
		return jute.ErrBadArguments, nil, jute.Stat{}
	}
	n := t.lookup(path)
	if n == nil {
		return jute.ErrNoNode, nil, jute.Stat{}
	}
	if !permitted(t.acls.get(n.acl), callerOf(c), jute.PermRead) {
		return jute.ErrNoAuth, nil, jute.Stat{}
	}
	if watch {
		s.watches.add(wChild, path, c.id)
	}
	return jute.ErrOK, orEmpty(n.sortedChildren()), n.stat()
}

// setWatches re-registers a reconnecting client's watches, first sending
// the events it missed since relativeZxid (DataTree.setWatches); they go
// out before the reply.
func (s *Server) setWatches(c *conn, req *jute.SetWatches2) {
	t := s.tree
	rel := req.RelativeZxid
	for _, p := range req.DataWatches {
		n := t.lookup(p)
		switch {
		case n == nil:
			s.notify(c, event{jute.EventNodeDeleted, p})
		case n.mzxid > rel:
			s.notify(c, event{jute.EventNodeDataChanged, p})
		default:
			s.watches.add(wData, p, c.id)
		}
	}
	for _, p := range req.ExistWatches {
		if t.lookup(p) != nil {
			s.notify(c, event{jute.EventNodeCreated, p})
		} else {
			s.watches.add(wData, p, c.id)
		}
	}
	for _, p := range req.ChildWatches {
		n := t.lookup(p)
		switch {
		case n == nil:
			s.notify(c, event{jute.EventNodeDeleted, p})
		case n.pzxid > rel:
			s.notify(c, event{jute.EventNodeChildrenChanged, p})
		default:
			s.watches.add(wChild, p, c.id)
		}
	}
	for _, p := range req.PersistentWatches {
		s.watches.add(wPersistent, p, c.id)
	}
	for _, p := range req.PersistentRecursiveWatches {
		s.watches.add(wRecursive, p, c.id)
	}
}
