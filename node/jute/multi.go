package jute

import "fmt"

// multi (op 14) and multiRead (op 22) are not single records: the body is a
// sequence of {MultiHeader, op record} pairs ended by a header with Done set
// (MultiOperationRecord and MultiResponse in the Java server).

// MultiHeader frames each op of a multi request or response.
type MultiHeader struct {
	Type int32 // the op's type; OpError for a failed result
	Done bool  // set only on the terminator
	Err  int32 // -1 in requests; the error code in results (0 for successes)
}

func (h *MultiHeader) Encode(e *Encoder) { e.Int(h.Type); e.Bool(h.Done); e.Int(h.Err) }
func (h *MultiHeader) Decode(d *Decoder) { h.Type = d.Int(); h.Done = d.Bool(); h.Err = d.Int() }

// multiEnd is the terminator every client and the Java server write.
var multiEnd = MultiHeader{Type: -1, Done: true, Err: -1}

// MultiOp is one op of a multi or multiRead request. Type says which field is
// set.
type MultiOp struct {
	// Type is OpCreate, OpCreate2, OpCreateTTL, OpCreateContainer, OpDelete,
	// OpSetData or OpCheck in a multi; OpGetData or OpGetChildren in a
	// multiRead.
	Type int32
	// Create holds every create kind; for all but OpCreateTTL the wire record
	// is a CreateRequest and TTL is 0.
	Create      *CreateTTLRequest
	Delete      *DeleteRequest
	SetData     *SetDataRequest
	Check       *CheckVersionRequest
	GetData     *GetDataRequest     // Watch is on the wire but ZooKeeper ignores it in a multiRead
	GetChildren *GetChildrenRequest // likewise
}

// DecodeMulti decodes the body of a multi (read=false) or multiRead
// (read=true) request. It rejects op types that do not belong to that kind:
// ZooKeeper refuses to mix reads and writes in one request. The error is also
// left in d.
//
// Any header with Done set ends the list, whatever its Type and Err, because
// that is the only thing MultiOperationRecord.deserialize looks at. Every op
// consumes at least 14 bytes (a 9-byte header and a 5-byte body), so the
// number of ops is bounded by the input size. An empty multi (terminator
// only) decodes as no ops and no error.
func DecodeMulti(d *Decoder, read bool) ([]MultiOp, error) {
	var ops []MultiOp
	for {
		var h MultiHeader
		h.Decode(d)
		if d.err != nil {
			return nil, d.err
		}
		if h.Done {
			return ops, nil
		}
		op := MultiOp{Type: h.Type}
		switch {
		case !read && isCreateOp(h.Type):
			op.Create = new(CreateTTLRequest)
			if h.Type == OpCreateTTL {
				op.Create.Decode(d)
			} else {
				var c CreateRequest
				c.Decode(d)
				*op.Create = CreateTTLRequest{Path: c.Path, Data: c.Data, ACL: c.ACL, Flags: c.Flags}
			}
		case !read && h.Type == OpDelete:
			op.Delete = new(DeleteRequest)
			op.Delete.Decode(d)
		case !read && h.Type == OpSetData:
			op.SetData = new(SetDataRequest)
			op.SetData.Decode(d)
		case !read && h.Type == OpCheck:
			op.Check = new(CheckVersionRequest)
			op.Check.Decode(d)
		case read && h.Type == OpGetData:
			op.GetData = new(GetDataRequest)
			op.GetData.Decode(d)
		case read && h.Type == OpGetChildren:
			op.GetChildren = new(GetChildrenRequest)
			op.GetChildren.Decode(d)
		default:
			kind := "multi"
			if read {
				kind = "multiRead"
			}
			d.Fail("op type %d not allowed in %s", h.Type, kind)
			return nil, d.err
		}
		if d.err != nil {
			return nil, d.err
		}
		ops = append(ops, op)
	}
}

func isCreateOp(t int32) bool {
	return t == OpCreate || t == OpCreate2 || t == OpCreateTTL || t == OpCreateContainer
}

// EncodeMulti encodes the body of a multi or multiRead request as the clients
// do: each op behind MultiHeader{Type, false, -1}, then the terminator
// {-1, true, -1}. It panics on an op whose Type is unknown or whose matching
// field is nil: that is a bug in the caller, not something to put on the wire.
func EncodeMulti(e *Encoder, ops []MultiOp) {
	for i := range ops {
		op := &ops[i]
		h := MultiHeader{Type: op.Type, Err: -1}
		var body Record
		switch {
		case op.Type == OpCreateTTL && op.Create != nil:
			body = op.Create
		case isCreateOp(op.Type) && op.Create != nil:
			c := op.Create
			body = &CreateRequest{Path: c.Path, Data: c.Data, ACL: c.ACL, Flags: c.Flags}
		case op.Type == OpDelete && op.Delete != nil:
			body = op.Delete
		case op.Type == OpSetData && op.SetData != nil:
			body = op.SetData
		case op.Type == OpCheck && op.Check != nil:
			body = op.Check
		case op.Type == OpGetData && op.GetData != nil:
			body = op.GetData
		case op.Type == OpGetChildren && op.GetChildren != nil:
			body = op.GetChildren
		default:
			panic(fmt.Sprintf("jute.EncodeMulti: op %d has type %d and no matching request", i, op.Type))
		}
		h.Encode(e)
		body.Encode(e)
	}
	multiEnd.Encode(e)
}

// MultiResult is one op's result in a multi or multiRead response.
type MultiResult struct {
	// Type is the op type, or OpError (-1) for a failed op and, when a multi
	// fails, for every op of it.
	Type int32
	// Err is the error code of an OpError result; for a failed multi it is 0
	// for the ops before the failing one, the failure's code for that op, and
	// ErrRuntimeInconsistency for the ops after it. Ignored for other types,
	// whose header err is always 0 on the wire.
	Err      int32
	Path     string   // OpCreate, OpCreate2
	Stat     *Stat    // OpCreate2, OpSetData, OpGetData
	Data     []byte   // OpGetData
	Children []string // OpGetChildren
}

// EncodeMultiResponse encodes the body of a multi or multiRead reply as
// ZooKeeper's MultiResponse.serialize does: each result behind MultiHeader{Type,
// false, Err} (Err 0 unless Type is OpError), its body, then the terminator
// {-1, true, -1}. Bodies: OpCreate the path; OpCreate2 path and Stat; OpDelete
// and OpCheck nothing; OpSetData a Stat; OpGetData data and Stat;
// OpGetChildren the names; OpError ErrorResponse{Err}.
//
// Report a successful create inside a multi as OpCreate (path only), whatever
// its request type: ZooKeeper 3.8 does, and kazoo 2.8 and go-zookeeper 1.0.4
// cannot parse an OpCreate2 result (reference section 7).
//
// It panics on an unknown Type or a missing Stat, which are server bugs: a
// zeroed Stat would be believed by the client.
func EncodeMultiResponse(e *Encoder, results []MultiResult) {
	for i := range results {
		r := &results[i]
		h := MultiHeader{Type: r.Type}
		if r.Type == OpError {
			h.Err = r.Err
		}
		needStat := r.Type == OpCreate2 || r.Type == OpSetData || r.Type == OpGetData
		if needStat && r.Stat == nil {
			panic(fmt.Sprintf("jute.EncodeMultiResponse: result %d of type %d has no Stat", i, r.Type))
		}
		switch r.Type {
		case OpCreate, OpCreate2, OpDelete, OpCheck, OpSetData, OpGetData, OpGetChildren, OpError:
		default:
			panic(fmt.Sprintf("jute.EncodeMultiResponse: result %d has unknown type %d", i, r.Type))
		}
		h.Encode(e)
		switch r.Type {
		case OpCreate:
			e.String(r.Path)
		case OpCreate2:
			e.String(r.Path)
			r.Stat.Encode(e)
		case OpSetData:
			r.Stat.Encode(e)
		case OpGetData:
			e.Buffer(r.Data)
			r.Stat.Encode(e)
		case OpGetChildren:
			e.Strings(r.Children)
		case OpError:
			e.Int(r.Err)
		}
	}
	multiEnd.Encode(e)
}

// DecodeMultiResponse decodes the body of a multi or multiRead reply. As in
// MultiResponse.deserialize, a failed op's code comes from its ErrorResponse
// body (the header carries the same value) and any header with Done set ends
// the list. The error is also left in d.
func DecodeMultiResponse(d *Decoder) ([]MultiResult, error) {
	var results []MultiResult
	for {
		var h MultiHeader
		h.Decode(d)
		if d.err != nil {
			return nil, d.err
		}
		if h.Done {
			return results, nil
		}
		r := MultiResult{Type: h.Type}
		switch h.Type {
		case OpCreate:
			r.Path = d.String()
		case OpCreate2:
			r.Path = d.String()
			r.Stat = new(Stat)
			r.Stat.Decode(d)
		case OpDelete, OpCheck:
		case OpSetData:
			r.Stat = new(Stat)
			r.Stat.Decode(d)
		case OpGetData:
			r.Data = d.Buffer()
			r.Stat = new(Stat)
			r.Stat.Decode(d)
		case OpGetChildren:
			r.Children = d.Strings()
		case OpError:
			r.Err = d.Int()
		default:
			d.Fail("unknown result type %d in multi response", h.Type)
		}
		if d.err != nil {
			return nil, d.err
		}
		results = append(results, r)
	}
}
