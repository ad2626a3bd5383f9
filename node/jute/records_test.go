package jute

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// allRecords lists one value of every Record type in the package.
// TestAllRecordsListed keeps it complete, so the round-trip property and
// FuzzDecodeRequest cover every record, including ones added later.
var allRecords = []Record{
	&ConnectRequest{}, &ConnectResponse{}, &RequestHeader{}, &ReplyHeader{}, &Stat{},
	&ID{}, &ACL{}, &CreateRequest{}, &CreateTTLRequest{}, &CreateResponse{}, &Create2Response{},
	&DeleteRequest{}, &ExistsRequest{}, &GetDataRequest{}, &GetDataResponse{}, &SetDataRequest{},
	&GetACLRequest{}, &GetACLResponse{}, &SetACLRequest{}, &GetChildrenRequest{},
	&GetChildrenResponse{}, &GetChildren2Response{}, &SyncRequest{}, &SyncResponse{},
	&CheckVersionRequest{}, &CheckWatchesRequest{}, &RemoveWatchesRequest{}, &AuthPacket{},
	&SetWatches{}, &SetWatches2{}, &GetSASLRequest{}, &SetSASLResponse{},
	&GetEphemeralsRequest{}, &GetEphemeralsResponse{}, &GetAllChildrenNumberRequest{},
	&GetAllChildrenNumberResponse{}, &AddWatchRequest{}, &ErrorResponse{}, &ClientInfo{},
	&WhoAmIResponse{}, &WatcherEvent{}, &ReconfigRequest{}, &MultiHeader{},
}

// newRecord returns a fresh zero record of the same type as r.
func newRecord(r Record) Record {
	return reflect.New(reflect.TypeOf(r).Elem()).Interface().(Record)
}

func typeName(r Record) string { return reflect.TypeOf(r).Elem().Name() }

// TestAllRecordsListed parses the package source and fails if a type with a
// Decode method is missing from allRecords.
func TestAllRecordsListed(t *testing.T) {
	fset := token.NewFileSet()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var files []*ast.File
	for _, name := range names {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	var listed []string
	for _, r := range allRecords {
		listed = append(listed, typeName(r))
	}
	found := 0
	for _, f := range files {
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "Decode" {
				continue
			}
			star, ok := fn.Recv.List[0].Type.(*ast.StarExpr)
			if !ok {
				continue
			}
			name := star.X.(*ast.Ident).Name
			found++
			if !slices.Contains(listed, name) {
				t.Errorf("record %s is missing from allRecords", name)
			}
		}
	}
	if found != len(allRecords) {
		t.Errorf("found %d Decode methods in the source, allRecords has %d entries", found, len(allRecords))
	}
}

// genString draws short strings, both arbitrary Unicode and arbitrary bytes:
// the codec must carry invalid UTF-8 unchanged.
func genString(t *rapid.T, label string) string {
	if rapid.Bool().Draw(t, label+".raw") {
		return string(rapid.SliceOfN(rapid.Byte(), 0, 12).Draw(t, label))
	}
	return rapid.StringN(0, 12, -1).Draw(t, label)
}

// fill sets v (addressable) to random contents. Slices are sometimes nil and
// sometimes empty, because the wire tells null (-1) from empty (0) apart and
// decoding must give back the same one.
func fill(t *rapid.T, v reflect.Value, label string) {
	switch v.Kind() {
	case reflect.Int32:
		v.SetInt(int64(rapid.Int32().Draw(t, label)))
	case reflect.Int64:
		v.SetInt(rapid.Int64().Draw(t, label))
	case reflect.Uint8:
		v.SetUint(uint64(rapid.Byte().Draw(t, label)))
	case reflect.Bool:
		v.SetBool(rapid.Bool().Draw(t, label))
	case reflect.String:
		v.SetString(genString(t, label))
	case reflect.Slice:
		if rapid.IntRange(0, 4).Draw(t, label+".nil") == 0 {
			v.SetZero()
			return
		}
		n := rapid.IntRange(0, 4).Draw(t, label+".len")
		s := reflect.MakeSlice(v.Type(), n, n)
		for i := range n {
			fill(t, s.Index(i), label+"[]")
		}
		v.Set(s)
	case reflect.Struct:
		for i := range v.NumField() {
			fill(t, v.Field(i), label+"."+v.Type().Field(i).Name)
		}
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(t, p.Elem(), label)
		v.Set(p)
	default:
		t.Fatalf("fill: unsupported kind %s at %s", v.Kind(), label)
	}
}

// genRecord returns a random record of r's type.
func genRecord(t *rapid.T, r Record) Record {
	v := newRecord(r)
	fill(t, reflect.ValueOf(v).Elem(), typeName(r))
	// ReadOnly has no representation without its byte.
	switch c := v.(type) {
	case *ConnectRequest:
		c.ReadOnly = c.ReadOnly && c.HasReadOnly
	case *ConnectResponse:
		c.ReadOnly = c.ReadOnly && c.HasReadOnly
	}
	return v
}

// TestRecordRoundTrip: for every record type, random values encode and then
// decode to an equal value, consuming exactly the encoded bytes; and the
// encoding is canonical (re-encoding the decoded value gives the same bytes).
func TestRecordRoundTrip(t *testing.T) {
	for _, proto := range allRecords {
		t.Run(typeName(proto), func(t *testing.T) {
			rapid.Check(t, func(t *rapid.T) {
				in := genRecord(t, proto)
				b := Marshal(in)
				out := newRecord(proto)
				if err := Unmarshal(b, out); err != nil {
					t.Fatalf("decode %x: %v", b, err)
				}
				if !reflect.DeepEqual(in, out) {
					t.Fatalf("round trip changed the value:\n in  %#v\n out %#v\n bytes %x", in, out, b)
				}
				if b2 := Marshal(out); !slices.Equal(b, b2) {
					t.Fatalf("re-encoding differs:\n %x\n %x", b, b2)
				}
				// Every strict prefix is truncated input: it must fail,
				// except where the record legitimately ends early (the
				// optional readOnly byte).
				cut := rapid.IntRange(0, max(len(b)-1, 0)).Draw(t, "cut")
				if len(b) > 0 {
					err := Unmarshal(b[:cut], newRecord(proto))
					optional := cut == len(b)-1 && hasReadOnlyByte(in)
					if err == nil && !optional {
						t.Fatalf("decoding the %d-byte prefix of %x succeeded", cut, b)
					}
				}
			})
		})
	}
}

func hasReadOnlyByte(r Record) bool {
	switch c := r.(type) {
	case *ConnectRequest:
		return c.HasReadOnly
	case *ConnectResponse:
		return c.HasReadOnly
	}
	return false
}

// TestDecodeOverwrites: decoding into a used record replaces every field,
// so a server can reuse request values.
func TestDecodeOverwrites(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		proto := rapid.SampledFrom(allRecords).Draw(t, "type")
		a, b := genRecord(t, proto), genRecord(t, proto)
		if err := Unmarshal(Marshal(a), b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("decoding into a used %s left old fields:\n want %#v\n got  %#v", typeName(proto), a, b)
		}
	})
}
