package jute

import (
	"errors"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

var writeOpTypes = []int32{OpCreate, OpCreate2, OpCreateTTL, OpCreateContainer, OpDelete, OpSetData, OpCheck}
var readOpTypes = []int32{OpGetData, OpGetChildren}

// genMultiOp draws a random op of one of the given types, with the matching
// field set and TTL 0 unless the type carries one.
func genMultiOp(t *rapid.T, types []int32) MultiOp {
	op := MultiOp{Type: rapid.SampledFrom(types).Draw(t, "type")}
	switch op.Type {
	case OpCreate, OpCreate2, OpCreateTTL, OpCreateContainer:
		op.Create = genRecord(t, &CreateTTLRequest{}).(*CreateTTLRequest)
		if op.Type != OpCreateTTL {
			op.Create.TTL = 0
		}
	case OpDelete:
		op.Delete = genRecord(t, &DeleteRequest{}).(*DeleteRequest)
	case OpSetData:
		op.SetData = genRecord(t, &SetDataRequest{}).(*SetDataRequest)
	case OpCheck:
		op.Check = genRecord(t, &CheckVersionRequest{}).(*CheckVersionRequest)
	case OpGetData:
		op.GetData = genRecord(t, &GetDataRequest{}).(*GetDataRequest)
	case OpGetChildren:
		op.GetChildren = genRecord(t, &GetChildrenRequest{}).(*GetChildrenRequest)
	}
	return op
}

func genMultiResult(t *rapid.T) MultiResult {
	r := MultiResult{Type: rapid.SampledFrom([]int32{OpCreate, OpCreate2, OpDelete, OpCheck, OpSetData, OpGetData, OpGetChildren, OpError}).Draw(t, "type")}
	stat := func() *Stat { return genRecord(t, &Stat{}).(*Stat) }
	switch r.Type {
	case OpCreate:
		r.Path = genString(t, "path")
	case OpCreate2:
		r.Path = genString(t, "path")
		r.Stat = stat()
	case OpSetData:
		r.Stat = stat()
	case OpGetData:
		r.Data = rapid.SliceOfN(rapid.Byte(), -1, 8).Draw(t, "data")
		if rapid.Bool().Draw(t, "nulldata") {
			r.Data = nil
		}
		r.Stat = stat()
	case OpGetChildren:
		if !rapid.Bool().Draw(t, "nullchildren") {
			r.Children = rapid.SliceOfN(rapid.StringN(0, 6, -1), 0, 4).Draw(t, "children")
		}
	case OpError:
		r.Err = rapid.Int32().Draw(t, "err")
	}
	return r
}

// TestMultiRoundTrip: random multi and multiRead requests round-trip, and
// the decoder consumes exactly the encoding.
func TestMultiRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		read := rapid.Bool().Draw(t, "read")
		types := writeOpTypes
		if read {
			types = readOpTypes
		}
		n := rapid.IntRange(0, 6).Draw(t, "n")
		var ops []MultiOp
		for range n {
			ops = append(ops, genMultiOp(t, types))
		}
		var e Encoder
		EncodeMulti(&e, ops)
		d := NewDecoder(e.B)
		got, err := DecodeMulti(d, read)
		if err != nil || d.Done() != nil {
			t.Fatalf("decode %x: %v / %v", e.B, err, d.Done())
		}
		if !reflect.DeepEqual(got, ops) {
			t.Fatalf("round trip:\n in  %#v\n out %#v", ops, got)
		}
		// The other kind must refuse any non-empty request.
		if n > 0 {
			if _, err := DecodeMulti(NewDecoder(e.B), !read); err == nil {
				t.Fatalf("read=%v request decoded as read=%v", read, !read)
			}
		}
		// Without its terminator the request is truncated.
		if _, err := DecodeMulti(NewDecoder(e.B[:len(e.B)-1]), read); err == nil {
			t.Fatal("request without a complete terminator decoded")
		}
	})
}

func TestMultiResponseRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 6).Draw(t, "n")
		var results []MultiResult
		for range n {
			results = append(results, genMultiResult(t))
		}
		var e Encoder
		EncodeMultiResponse(&e, results)
		d := NewDecoder(e.B)
		got, err := DecodeMultiResponse(d)
		if err != nil || d.Done() != nil {
			t.Fatalf("decode %x: %v / %v", e.B, err, d.Done())
		}
		if !reflect.DeepEqual(got, results) {
			t.Fatalf("round trip:\n in  %#v\n out %#v", results, got)
		}
		if _, err := DecodeMultiResponse(NewDecoder(e.B[:len(e.B)-1])); err == nil {
			t.Fatal("response without a complete terminator decoded")
		}
	})
}

// TestMultiRejectsForeignOps: every op type outside the allowed set of the
// kind is an error, including nested multis, types that only exist at the
// top level, and -1 in a header without done set.
func TestMultiRejectsForeignOps(t *testing.T) {
	for _, read := range []bool{false, true} {
		allowed := writeOpTypes
		if read {
			allowed = readOpTypes
		}
		for typ := int32(-12); typ <= 110; typ++ {
			// A header, then a body big enough for any op, then the terminator.
			var e Encoder
			(&MultiHeader{Type: typ, Err: -1}).Encode(&e)
			(&CreateTTLRequest{Path: "/x", ACL: []ACL{}}).Encode(&e)
			multiEnd.Encode(&e)
			_, err := DecodeMulti(NewDecoder(e.B), read)
			isAllowed := false
			for _, a := range allowed {
				isAllowed = isAllowed || a == typ
			}
			if !isAllowed && err == nil {
				t.Errorf("read=%v: op type %d accepted", read, typ)
			}
			if !isAllowed && !errors.Is(err, ErrMalformed) {
				t.Errorf("read=%v: op type %d: error %v does not wrap ErrMalformed", read, typ, err)
			}
		}
	}
}

// TestMultiCreateKinds: every create kind decodes into Create, keeping its
// Type; only createTTL carries a TTL on the wire.
func TestMultiCreateKinds(t *testing.T) {
	for _, typ := range []int32{OpCreate, OpCreate2, OpCreateContainer, OpCreateTTL} {
		op := MultiOp{Type: typ, Create: &CreateTTLRequest{Path: "/n", Data: []byte{}, ACL: []ACL{}, Flags: ModeContainer, TTL: 99}}
		var e Encoder
		EncodeMulti(&e, []MultiOp{op})
		wantLen := 9 + (6 + 4 + 4 + 4) + 9
		wantTTL := int64(0)
		if typ == OpCreateTTL {
			wantLen += 8
			wantTTL = 99
		}
		if len(e.B) != wantLen {
			t.Errorf("type %d: %d bytes, want %d", typ, len(e.B), wantLen)
		}
		ops, err := DecodeMulti(NewDecoder(e.B), false)
		if err != nil || len(ops) != 1 || ops[0].Type != typ || ops[0].Create == nil || ops[0].Create.TTL != wantTTL || ops[0].Create.Path != "/n" {
			t.Errorf("type %d: decoded %#v, %v", typ, ops, err)
		}
	}
}

// TestMultiTerminator: an empty multi is just the terminator, and like
// ZooKeeper any header with done set ends the list whatever its type.
func TestMultiTerminator(t *testing.T) {
	ops, err := DecodeMulti(NewDecoder(unhex(t, "ffffffff 01 ffffffff")), false)
	if err != nil || len(ops) != 0 {
		t.Errorf("empty multi: %v, %v", ops, err)
	}
	d := NewDecoder(unhex(t, "00000002 00 ffffffff 00000002 2f62 ffffffff | 00000005 01 00000000"))
	ops, err = DecodeMulti(d, false)
	if err != nil || len(ops) != 1 || d.Done() != nil {
		t.Errorf("done header with type 5: %v, %v, %v", ops, err, d.Done())
	}
	if _, err := DecodeMulti(NewDecoder(nil), false); err == nil {
		t.Error("empty body decoded")
	}
}

// TestMultiFailureHeaderErr: EncodeMultiResponse writes the error code in the
// header only for OpError results, as MultiResponse.serialize does; a stray
// Err on a success is not put on the wire.
func TestMultiFailureHeaderErr(t *testing.T) {
	var e Encoder
	EncodeMultiResponse(&e, []MultiResult{{Type: OpDelete, Err: ErrNoNode}})
	if want := unhex(t, "00000002 00 00000000 ffffffff 01 ffffffff"); string(e.B) != string(want) {
		t.Errorf("got %x want %x", e.B, want)
	}
}

func TestMultiResponseRejectsUnknownType(t *testing.T) {
	for _, typ := range []int32{OpExists, OpMulti, OpCreateTTL, OpCreateContainer, 0, 100} {
		var e Encoder
		(&MultiHeader{Type: typ}).Encode(&e)
		e.Int(0)
		multiEnd.Encode(&e)
		if _, err := DecodeMultiResponse(NewDecoder(e.B)); err == nil {
			t.Errorf("result type %d accepted", typ)
		}
	}
}

func TestEncodeMultiPanicsOnBadInput(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	mustPanic("op without body", func() { EncodeMulti(&Encoder{}, []MultiOp{{Type: OpDelete}}) })
	mustPanic("op with the wrong body", func() { EncodeMulti(&Encoder{}, []MultiOp{{Type: OpDelete, Check: &CheckVersionRequest{}}}) })
	mustPanic("unknown op", func() { EncodeMulti(&Encoder{}, []MultiOp{{Type: OpExists}}) })
	mustPanic("setData result without Stat", func() { EncodeMultiResponse(&Encoder{}, []MultiResult{{Type: OpSetData}}) })
	mustPanic("unknown result", func() { EncodeMultiResponse(&Encoder{}, []MultiResult{{Type: OpSync}}) })
}
