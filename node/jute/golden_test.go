package jute

import (
	"bytes"
	"encoding/hex"
	"reflect"
	"strings"
	"testing"
)

// Golden encodings, written out by hand from the jute rules (big-endian ints
// and longs, one-byte booleans, length-prefixed strings and buffers,
// count-prefixed vectors), so byte layout and lengths are pinned
// independently of the encoder.

// unhex decodes hex with spaces, newlines and "|" separators for readability.
func unhex(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.NewReplacer(" ", "", "\n", "", "\t", "", "|", "").Replace(s)
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad golden hex: %v", err)
	}
	return b
}

type golden struct {
	name string
	rec  Record
	hex  string
	size int
}

var passwd16 = []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

const passwd16Hex = "00000010 0102030405060708090a0b0c0d0e0f10"

var goldens = []golden{
	{"ConnectRequest/go-zk (no readOnly byte)",
		&ConnectRequest{ProtocolVersion: 0, LastZxidSeen: 0x100000005, TimeOut: 10000, SessionID: 0x0100000af09c0000, Passwd: passwd16},
		"00000000 | 0000000100000005 | 00002710 | 0100000af09c0000 | " + passwd16Hex, 44},
	{"ConnectRequest/kazoo (readOnly byte)",
		&ConnectRequest{ProtocolVersion: 0, LastZxidSeen: 0x100000005, TimeOut: 10000, SessionID: 0x0100000af09c0000, Passwd: passwd16, HasReadOnly: true},
		"00000000 | 0000000100000005 | 00002710 | 0100000af09c0000 | " + passwd16Hex + " | 00", 45},
	{"ConnectRequest/read-only client",
		&ConnectRequest{TimeOut: 30000, Passwd: make([]byte, 16), ReadOnly: true, HasReadOnly: true},
		"00000000 | 0000000000000000 | 00007530 | 0000000000000000 | 00000010 00000000000000000000000000000000 | 01", 45},
	{"ConnectResponse/without readOnly",
		&ConnectResponse{TimeOut: 4000, SessionID: 0x0100000af09c0001, Passwd: passwd16},
		"00000000 | 00000fa0 | 0100000af09c0001 | " + passwd16Hex, 36},
	{"ConnectResponse/with readOnly",
		&ConnectResponse{TimeOut: 4000, SessionID: 0x0100000af09c0001, Passwd: passwd16, HasReadOnly: true},
		"00000000 | 00000fa0 | 0100000af09c0001 | " + passwd16Hex + " | 00", 37},
	{"ConnectResponse/expired session",
		&ConnectResponse{Passwd: make([]byte, 16), HasReadOnly: true},
		"00000000 | 00000000 | 0000000000000000 | 00000010 00000000000000000000000000000000 | 00", 37},
	{"RequestHeader/ping", &RequestHeader{Xid: XidPing, Type: OpPing}, "fffffffe | 0000000b", 8},
	{"ReplyHeader/NoNode",
		&ReplyHeader{Xid: 1, Zxid: 0x100000002, Err: ErrNoNode},
		"00000001 | 0000000100000002 | ffffff9b", 16},
	{"ReplyHeader/notification", &ReplyHeader{Xid: XidNotification, Zxid: -1}, "ffffffff | ffffffffffffffff | 00000000", 16},
	{"Stat",
		&Stat{Czxid: 1, Mzxid: 2, Ctime: 3, Mtime: 4, Version: 5, Cversion: -1, Aversion: 7,
			EphemeralOwner: 0x0100000af09c0000, DataLength: 9, NumChildren: 10, Pzxid: 11},
		`0000000000000001 | 0000000000000002 | 0000000000000003 | 0000000000000004 |
		 00000005 | ffffffff | 00000007 | 0100000af09c0000 | 00000009 | 0000000a | 000000000000000b`, 68},
	{"CreateRequest/world:anyone ACL",
		&CreateRequest{Path: "/a", Data: []byte("x"), ACL: []ACL{{Perms: PermAll, ID: ID{"world", "anyone"}}}, Flags: ModeEphemeralSequential},
		`00000002 2f61 | 00000001 78 | 00000001 | 0000001f | 00000005 776f726c64 | 00000006 616e796f6e65 | 00000003`, 42},
	{"CreateRequest/null data and ACL",
		&CreateRequest{Path: "/", Data: nil, ACL: nil},
		"00000001 2f | ffffffff | ffffffff | 00000000", 17},
	{"CreateTTLRequest",
		&CreateTTLRequest{Path: "/t", Data: []byte{}, ACL: []ACL{}, Flags: ModePersistentWithTTL, TTL: 5000},
		"00000002 2f74 | 00000000 | 00000000 | 00000005 | 0000000000001388", 26},
	{"GetChildrenResponse",
		&GetChildrenResponse{Children: []string{"zookeeper", ""}},
		"00000002 | 00000009 7a6f6f6b6565706572 | 00000000", 21},
	{"WatcherEvent",
		&WatcherEvent{Type: EventNodeChildrenChanged, State: StateSyncConnected, Path: "/p"},
		"00000004 | 00000003 | 00000002 2f70", 14},
	{"AuthPacket",
		&AuthPacket{Type: 0, Scheme: "digest", Auth: []byte("u:p")},
		"00000000 | 00000006 646967657374 | 00000003 753a70", 21},
	{"SetWatches",
		&SetWatches{RelativeZxid: 7, DataWatches: []string{"/d"}, ExistWatches: []string{}, ChildWatches: nil},
		"0000000000000007 | 00000001 00000002 2f64 | 00000000 | ffffffff", 26},
	{"ErrorResponse/addWatch reply", &ErrorResponse{Err: 0}, "00000000", 4},
}

func TestGoldenEncodings(t *testing.T) {
	for _, g := range goldens {
		t.Run(g.name, func(t *testing.T) {
			want := unhex(t, g.hex)
			if len(want) != g.size {
				t.Fatalf("golden hex has %d bytes, the layout says %d", len(want), g.size)
			}
			if got := Marshal(g.rec); !bytes.Equal(got, want) {
				t.Errorf("encode:\n got  %x\n want %x", got, want)
			}
			out := newRecord(g.rec)
			if err := Unmarshal(want, out); err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(out, g.rec) {
				t.Errorf("decode:\n got  %#v\n want %#v", out, g.rec)
			}
		})
	}
}

// TestConnectRequestReadOnlyByte: the 44-byte (go-zookeeper) and 45-byte
// (kazoo, Java, C) forms decode with HasReadOnly telling them apart, and a
// connect request with more than one byte after passwd leaves the extra for
// Done to report.
func TestConnectRequestReadOnlyByte(t *testing.T) {
	base := unhex(t, "00000000 0000000000000000 00002710 0000000000000000 00000010 00000000000000000000000000000000")
	for _, tc := range []struct {
		tail            []byte
		has, ro, doneOK bool
	}{
		{nil, false, false, true},
		{[]byte{0}, true, false, true},
		{[]byte{1}, true, true, true},
		{[]byte{7}, true, true, true}, // any non-zero byte is true, as in Java
		{[]byte{1, 0}, true, true, false},
	} {
		d := NewDecoder(append(append([]byte{}, base...), tc.tail...))
		var r ConnectRequest
		r.Decode(d)
		if d.Err() != nil {
			t.Fatalf("tail %x: %v", tc.tail, d.Err())
		}
		if r.HasReadOnly != tc.has || r.ReadOnly != tc.ro {
			t.Errorf("tail %x: HasReadOnly=%v ReadOnly=%v, want %v %v", tc.tail, r.HasReadOnly, r.ReadOnly, tc.has, tc.ro)
		}
		if err := d.Done(); (err == nil) != tc.doneOK {
			t.Errorf("tail %x: Done() = %v", tc.tail, err)
		}
	}
	// A request cut inside passwd is an error, not a request without the byte.
	var r ConnectRequest
	if err := Unmarshal(base[:40], &r); err == nil {
		t.Error("a truncated passwd decoded")
	}
}

// The multi goldens: create + delete + check, as kazoo's transaction or
// go-zookeeper's Multi sends it.
var multiOps = []MultiOp{
	{Type: OpCreate, Create: &CreateTTLRequest{Path: "/a", Data: []byte("x"), ACL: []ACL{{Perms: PermAll, ID: ID{"world", "anyone"}}}}},
	{Type: OpDelete, Delete: &DeleteRequest{Path: "/b", Version: -1}},
	{Type: OpCheck, Check: &CheckVersionRequest{Path: "/c", Version: 3}},
}

const multiOpsHex = `
	00000001 00 ffffffff | 00000002 2f61 | 00000001 78 | 00000001 0000001f 00000005 776f726c64 00000006 616e796f6e65 | 00000000
	00000002 00 ffffffff | 00000002 2f62 | ffffffff
	0000000d 00 ffffffff | 00000002 2f63 | 00000003
	ffffffff 01 ffffffff`

func TestGoldenMulti(t *testing.T) {
	want := unhex(t, multiOpsHex)
	if len(want) != 51+19+19+9 {
		t.Fatalf("golden multi has %d bytes", len(want))
	}
	var e Encoder
	EncodeMulti(&e, multiOps)
	if !bytes.Equal(e.B, want) {
		t.Errorf("EncodeMulti:\n got  %x\n want %x", e.B, want)
	}
	d := NewDecoder(want)
	ops, err := DecodeMulti(d, false)
	if err != nil || d.Done() != nil {
		t.Fatalf("DecodeMulti: %v, %v", err, d.Done())
	}
	if !reflect.DeepEqual(ops, multiOps) {
		t.Errorf("DecodeMulti:\n got  %#v\n want %#v", ops, multiOps)
	}
}

func TestGoldenMultiResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		results []MultiResult
		hex     string
		size    int
	}{
		{
			// Success: the create reported as type 1 with its path; delete and
			// check have no body; header err 0.
			"success",
			[]MultiResult{{Type: OpCreate, Path: "/a"}, {Type: OpDelete}, {Type: OpCheck}},
			`00000001 00 00000000 | 00000002 2f61
			 00000002 00 00000000
			 0000000d 00 00000000
			 ffffffff 01 ffffffff`,
			15 + 9 + 9 + 9,
		},
		{
			// The delete failed with NoNode: ops before it {-1, 0}, the failing
			// op its code, ops after it -2, each code in the header and in the
			// ErrorResponse body.
			"failure",
			[]MultiResult{{Type: OpError, Err: ErrOK}, {Type: OpError, Err: ErrNoNode}, {Type: OpError, Err: ErrRuntimeInconsistency}},
			`ffffffff 00 00000000 | 00000000
			 ffffffff 00 ffffff9b | ffffff9b
			 ffffffff 00 fffffffe | fffffffe
			 ffffffff 01 ffffffff`,
			13*3 + 9,
		},
		{
			"empty",
			nil,
			"ffffffff 01 ffffffff",
			9,
		},
		{
			"multiRead",
			[]MultiResult{
				{Type: OpGetData, Data: []byte("hi"), Stat: &Stat{DataLength: 2}},
				{Type: OpGetChildren, Children: []string{"c"}},
				{Type: OpError, Err: ErrNoNode},
			},
			`00000004 00 00000000 | 00000002 6869 | 0000000000000000 0000000000000000 0000000000000000 0000000000000000
			   00000000 00000000 00000000 0000000000000000 00000002 00000000 0000000000000000
			 00000008 00 00000000 | 00000001 00000001 63
			 ffffffff 00 ffffff9b | ffffff9b
			 ffffffff 01 ffffffff`,
			9 + 6 + 68 + 9 + 9 + 13 + 9,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.hex)
			if len(want) != tc.size {
				t.Fatalf("golden hex has %d bytes, the layout says %d", len(want), tc.size)
			}
			var e Encoder
			EncodeMultiResponse(&e, tc.results)
			if !bytes.Equal(e.B, want) {
				t.Errorf("encode:\n got  %x\n want %x", e.B, want)
			}
			d := NewDecoder(want)
			got, err := DecodeMultiResponse(d)
			if err != nil || d.Done() != nil {
				t.Fatalf("decode: %v, %v", err, d.Done())
			}
			if !reflect.DeepEqual(got, tc.results) {
				t.Errorf("decode:\n got  %#v\n want %#v", got, tc.results)
			}
		})
	}
}

func TestGoldenMultiRead(t *testing.T) {
	ops := []MultiOp{
		{Type: OpGetData, GetData: &GetDataRequest{Path: "/a"}},
		{Type: OpGetChildren, GetChildren: &GetChildrenRequest{Path: "/b", Watch: true}},
	}
	want := unhex(t, `00000004 00 ffffffff | 00000002 2f61 | 00
	                  00000008 00 ffffffff | 00000002 2f62 | 01
	                  ffffffff 01 ffffffff`)
	var e Encoder
	EncodeMulti(&e, ops)
	if !bytes.Equal(e.B, want) {
		t.Errorf("encode:\n got  %x\n want %x", e.B, want)
	}
	got, err := DecodeMulti(NewDecoder(want), true)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ops) {
		t.Errorf("decode:\n got  %#v\n want %#v", got, ops)
	}
}
