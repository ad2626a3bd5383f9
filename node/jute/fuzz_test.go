package jute

import (
	"reflect"
	"testing"
)

// The fuzz targets check that no input panics the decoders and that what a
// decoder builds stays within a small multiple of the input size, which
// catches any length or count that reaches make() unchecked. Each also
// checks that whatever decodes re-encodes to something that decodes to the
// same value.

// maxBlowup bounds (bytes of decoded structure) / (bytes of input). The worst
// legitimate case is a multi response of body-less results: 9 input bytes
// per 80-byte MultiResult, doubled by append's growth, about 18.
const maxBlowup = 32

// footprint returns the bytes a decoded value occupies: the value itself
// plus everything it points to, counting slices by capacity, so an
// over-sized make() shows up even if the slice is mostly empty.
func footprint(v any) int {
	rv := reflect.ValueOf(v)
	return int(rv.Type().Size()) + indirect(rv)
}

// indirect returns the bytes reachable from v outside v itself.
func indirect(v reflect.Value) int {
	switch v.Kind() {
	case reflect.String:
		return v.Len()
	case reflect.Slice:
		n := v.Cap() * int(v.Type().Elem().Size())
		for i := range v.Len() {
			n += indirect(v.Index(i))
		}
		return n
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return 0
		}
		e := v.Elem()
		return int(e.Type().Size()) + indirect(e)
	case reflect.Struct:
		n := 0
		for i := range v.NumField() {
			n += indirect(v.Field(i))
		}
		return n
	}
	return 0
}

func checkFootprint(t *testing.T, input []byte, v any) {
	t.Helper()
	if n := footprint(v); n > maxBlowup*len(input)+256 {
		t.Fatalf("%d input bytes decoded into %d bytes (%T)", len(input), n, v)
	}
}

// FuzzDecodeRequest decodes data[1:] as the record chosen by data[0], over
// every record in the package (requests and responses alike: the server
// decodes the first, tests and client code the second).
func FuzzDecodeRequest(f *testing.F) {
	for i, r := range allRecords {
		f.Add(append([]byte{byte(i)}, Marshal(r)...))
	}
	for _, g := range goldens {
		for i, r := range allRecords {
			if reflect.TypeOf(r) == reflect.TypeOf(g.rec) {
				f.Add(append([]byte{byte(i)}, Marshal(g.rec)...))
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		proto := allRecords[int(data[0])%len(allRecords)]
		body := data[1:]
		r := newRecord(proto)
		d := NewDecoder(body)
		r.Decode(d)
		if d.Err() != nil {
			return
		}
		checkFootprint(t, body, r)
		consumed := len(body) - d.Remaining()
		again := newRecord(proto)
		b := Marshal(r)
		if err := Unmarshal(b, again); err != nil {
			t.Fatalf("%s: re-encoding %x does not decode: %v", typeName(proto), b, err)
		}
		if !reflect.DeepEqual(r, again) {
			t.Fatalf("%s: re-encode round trip changed\n %#v\n %#v", typeName(proto), r, again)
		}
		// Booleans are the only lossy primitive (any non-zero byte is true),
		// so the re-encoding has exactly the length consumed.
		if len(b) != consumed {
			t.Fatalf("%s: consumed %d bytes, re-encoded to %d", typeName(proto), consumed, len(b))
		}
	})
}

// FuzzDecodeMulti decodes data[1:] as a multi request (data[0]%3 == 0), a
// multiRead request (1) or a multi response (2).
func FuzzDecodeMulti(f *testing.F) {
	var e Encoder
	EncodeMulti(&e, multiOps)
	f.Add(append([]byte{0}, e.B...))
	e = Encoder{}
	EncodeMulti(&e, []MultiOp{
		{Type: OpGetData, GetData: &GetDataRequest{Path: "/a"}},
		{Type: OpGetChildren, GetChildren: &GetChildrenRequest{Path: "/b", Watch: true}},
	})
	f.Add(append([]byte{1}, e.B...))
	e = Encoder{}
	EncodeMultiResponse(&e, []MultiResult{
		{Type: OpCreate, Path: "/a"}, {Type: OpCreate2, Path: "/b", Stat: &Stat{}}, {Type: OpDelete}, {Type: OpCheck},
		{Type: OpSetData, Stat: &Stat{Version: 1}}, {Type: OpGetData, Data: []byte("d"), Stat: &Stat{}},
		{Type: OpGetChildren, Children: []string{"x"}}, {Type: OpError, Err: ErrNoNode},
	})
	f.Add(append([]byte{2}, e.B...))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		body := data[1:]
		d := NewDecoder(body)
		switch data[0] % 3 {
		case 0, 1:
			read := data[0]%3 == 1
			ops, err := DecodeMulti(d, read)
			if err != nil {
				if d.Err() == nil {
					t.Fatal("DecodeMulti error not left in the decoder")
				}
				return
			}
			checkFootprint(t, body, ops)
			for _, op := range ops {
				if !allowedIn(op.Type, read) {
					t.Fatalf("read=%v: op type %d accepted", read, op.Type)
				}
			}
			var e Encoder
			EncodeMulti(&e, ops)
			again, err := DecodeMulti(NewDecoder(e.B), read)
			if err != nil || !reflect.DeepEqual(ops, again) {
				t.Fatalf("re-encode round trip: %v\n %#v\n %#v", err, ops, again)
			}
		case 2:
			results, err := DecodeMultiResponse(d)
			if err != nil {
				return
			}
			checkFootprint(t, body, results)
			var e Encoder
			EncodeMultiResponse(&e, results)
			again, err := DecodeMultiResponse(NewDecoder(e.B))
			if err != nil || !reflect.DeepEqual(results, again) {
				t.Fatalf("re-encode round trip: %v\n %#v\n %#v", err, results, again)
			}
		}
	})
}

func allowedIn(typ int32, read bool) bool {
	types := writeOpTypes
	if read {
		types = readOpTypes
	}
	for _, a := range types {
		if a == typ {
			return true
		}
	}
	return false
}

// FuzzConnectRequest decodes the first packet of a connection, the one a
// server reads before it knows anything about the client, as both a
// ConnectRequest and a ConnectResponse.
func FuzzConnectRequest(f *testing.F) {
	for _, g := range goldens {
		switch g.rec.(type) {
		case *ConnectRequest, *ConnectResponse:
			f.Add(Marshal(g.rec))
		}
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var req ConnectRequest
		d := NewDecoder(data)
		req.Decode(d)
		if d.Err() == nil {
			checkFootprint(t, data, &req)
			// Passwd ends 4+8+4+8+4 bytes plus its length in: the readOnly
			// byte is present exactly when something follows.
			end := 28 + len(req.Passwd)
			if req.HasReadOnly != (len(data) > end) {
				t.Fatalf("HasReadOnly=%v with %d bytes after passwd", req.HasReadOnly, len(data)-end)
			}
			if (d.Done() == nil) != (len(data) <= end+1) {
				t.Fatalf("Done()=%v with %d bytes after passwd", d.Done(), len(data)-end)
			}
			var again ConnectRequest
			if err := Unmarshal(Marshal(&req), &again); err != nil || !reflect.DeepEqual(req, again) {
				t.Fatalf("re-encode round trip: %v\n %#v\n %#v", err, req, again)
			}
		}
		var resp ConnectResponse
		d = NewDecoder(data)
		resp.Decode(d)
		if d.Err() == nil {
			checkFootprint(t, data, &resp)
			var again ConnectResponse
			if err := Unmarshal(Marshal(&resp), &again); err != nil || !reflect.DeepEqual(resp, again) {
				t.Fatalf("re-encode round trip: %v\n %#v\n %#v", err, resp, again)
			}
		}
	})
}
