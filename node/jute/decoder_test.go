package jute

import (
	"errors"
	"runtime"
	"strings"
	"testing"
)

func TestPrimitiveEncodings(t *testing.T) {
	var e Encoder
	e.Int(-2)
	e.Long(0x0102030405060708)
	e.Bool(true)
	e.Bool(false)
	e.String("")
	e.String("é") // UTF-8 bytes, length in bytes
	e.Buffer(nil)
	e.Buffer([]byte{})
	e.Buffer([]byte{0xff})
	e.Strings(nil)
	e.Strings([]string{})
	e.Strings([]string{"a"})
	want := unhex(t, `fffffffe | 0102030405060708 | 01 | 00 | 00000000 | 00000002 c3a9 |
		ffffffff | 00000000 | 00000001 ff | ffffffff | 00000000 | 00000001 00000001 61`)
	if string(e.B) != string(want) {
		t.Fatalf("got  %x\nwant %x", e.B, want)
	}

	d := NewDecoder(want)
	if v := d.Int(); v != -2 {
		t.Errorf("Int = %d", v)
	}
	if v := d.Long(); v != 0x0102030405060708 {
		t.Errorf("Long = %x", v)
	}
	if !d.Bool() || d.Bool() {
		t.Error("Bool")
	}
	if s, null := d.StringOK(); s != "" || null {
		t.Errorf("empty string = %q null=%v", s, null)
	}
	if s := d.String(); s != "é" {
		t.Errorf("String = %q", s)
	}
	if b := d.Buffer(); b != nil {
		t.Errorf("null buffer = %#v, want nil", b)
	}
	if b := d.Buffer(); b == nil || len(b) != 0 {
		t.Errorf("empty buffer = %#v, want non-nil empty", b)
	}
	if b := d.Buffer(); len(b) != 1 || b[0] != 0xff {
		t.Errorf("buffer = %x", b)
	}
	if v := d.Strings(); v != nil {
		t.Errorf("null vector = %#v, want nil", v)
	}
	if v := d.Strings(); v == nil || len(v) != 0 {
		t.Errorf("empty vector = %#v, want non-nil empty", v)
	}
	if v := d.Strings(); len(v) != 1 || v[0] != "a" {
		t.Errorf("vector = %q", v)
	}
	if err := d.Done(); err != nil {
		t.Errorf("Done: %v", err)
	}
}

func TestNullString(t *testing.T) {
	d := NewDecoder(unhex(t, "ffffffff 00000001 41"))
	if s, null := d.StringOK(); s != "" || !null {
		t.Errorf("null string = %q null=%v", s, null)
	}
	if s, null := d.StringOK(); s != "A" || null {
		t.Errorf("string = %q null=%v", s, null)
	}
	if d.Done() != nil {
		t.Error(d.Done())
	}
}

// TestBufferIsCopy: a decoded buffer must survive the input being reused, as
// frame.Reader reuses its buffer.
func TestBufferIsCopy(t *testing.T) {
	in := unhex(t, "00000003 616263 00000003 646566")
	d := NewDecoder(in)
	b := d.Buffer()
	s := d.String()
	for i := range in {
		in[i] = 0
	}
	if string(b) != "abc" || s != "def" {
		t.Errorf("decoded values alias the input: %q %q", b, s)
	}
}

func TestDecoderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		hex  string
		read func(d *Decoder)
	}{
		{"short int", "000000", func(d *Decoder) { d.Int() }},
		{"short long", "00000000000000", func(d *Decoder) { d.Long() }},
		{"short bool", "", func(d *Decoder) { d.Bool() }},
		{"short string", "00000003 6162", func(d *Decoder) { _ = d.String() }},
		{"short string length", "0000", func(d *Decoder) { _ = d.String() }},
		{"negative string length", "fffffffe", func(d *Decoder) { _ = d.String() }},
		{"min int string length", "80000000", func(d *Decoder) { _ = d.String() }},
		{"short buffer", "00000002 61", func(d *Decoder) { d.Buffer() }},
		{"negative buffer length", "fffffff0 00", func(d *Decoder) { d.Buffer() }},
		{"negative vector count", "fffffffe", func(d *Decoder) { d.Strings() }},
		{"vector count beyond input", "00000003 00000000 00000000", func(d *Decoder) { d.Strings() }},
		{"vector item truncated", "00000002 00000000 00000005 61", func(d *Decoder) { d.Strings() }},
		{"huge vector count", "7fffffff 00000000", func(d *Decoder) { d.Strings() }},
		{"huge ACL count", "7fffffff 00000000 00000000 00000000", func(d *Decoder) { decodeACLs(d) }},
		{"ACL count beyond input", "00000002 00000001 00000000 00000000 0000", func(d *Decoder) { decodeACLs(d) }},
		{"trailing bytes", "00000001 00", func(d *Decoder) { d.Int() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(unhex(t, tc.hex))
			tc.read(d)
			err := d.Done()
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
		})
	}
}

// TestDecoderErrorSticks: after the first error every read returns a zero
// value, even if bytes remain, and Err keeps the first error.
func TestDecoderErrorSticks(t *testing.T) {
	d := NewDecoder(unhex(t, "fffffffe 00000005 0000000000000006 01 00000001 41"))
	if s := d.String(); s != "" {
		t.Errorf("bad string read as %q", s)
	}
	first := d.Err()
	if first == nil {
		t.Fatal("negative length accepted")
	}
	if d.Int() != 0 || d.Long() != 0 || d.Bool() || d.String() != "" || d.Buffer() != nil || d.Strings() != nil {
		t.Error("reads after an error returned data")
	}
	d.Fail("another problem")
	if d.Err() != first || d.Done() != first {
		t.Errorf("error changed from %v to %v / %v", first, d.Err(), d.Done())
	}
}

// TestDecoderAllocationBounded: inputs that claim enormous lengths or counts
// must fail without allocating for the claim. The measurement is the heap
// allocated while decoding; a decoder that trusted a 2^31 count would
// allocate gigabytes here.
func TestDecoderAllocationBounded(t *testing.T) {
	inputs := []struct {
		name   string
		decode func(d *Decoder)
		hex    string
	}{
		{"strings", func(d *Decoder) { d.Strings() }, "7fffffff 00000000 00000000"},
		{"buffer", func(d *Decoder) { d.Buffer() }, "7fffffff 00000000"},
		{"string", func(d *Decoder) { _ = d.String() }, "7ffffff0 41"},
		{"acls", func(d *Decoder) { new(CreateRequest).Decode(d) }, "00000001 2f ffffffff 7fffffff 00000000"},
		{"whoami", func(d *Decoder) { new(WhoAmIResponse).Decode(d) }, "20000000 00000000 00000000"},
		{"setwatches2", func(d *Decoder) { new(SetWatches2).Decode(d) }, "0000000000000000 00000000 00000000 00000000 00000000 40000000"},
	}
	for _, in := range inputs {
		b := unhex(t, in.hex)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d := NewDecoder(b)
		in.decode(d)
		runtime.ReadMemStats(&after)
		if d.Err() == nil {
			t.Errorf("%s: accepted %x", in.name, b)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
			t.Errorf("%s: decoding %d bytes allocated %d bytes", in.name, len(b), grew)
		}
	}
}

// TestVectorCountUsesMinItemSize: a count is accepted exactly when its items
// could fit, at 4 bytes per string.
func TestVectorCountUsesMinItemSize(t *testing.T) {
	ok := unhex(t, "00000002 00000000 00000000")
	if v := NewDecoder(ok).Strings(); len(v) != 2 {
		t.Errorf("two empty strings decoded as %q", v)
	}
	short := unhex(t, "00000002 00000000 000000")
	d := NewDecoder(short)
	d.Strings()
	if d.Err() == nil {
		t.Error("count 2 with 7 bytes left accepted")
	}
}

func TestErrName(t *testing.T) {
	for code, want := range map[int32]string{
		ErrOK: "OK", ErrNoNode: "NoNode", ErrSessionClosedRequireSASLAuth: "SessionClosedRequireSASLAuth",
		ErrThrottledOp: "ThrottledOp", ErrMarshallingError: "MarshallingError", -126: "Unknown(-126)", 5: "Unknown(5)",
	} {
		if got := ErrName(code); got != want {
			t.Errorf("ErrName(%d) = %q, want %q", code, got, want)
		}
	}
	// Every defined code has a name, and no two share one.
	codes := []int32{0, -1, -2, -3, -4, -5, -6, -7, -8, -12, -13, -14, -100, -101, -102, -103, -108, -110, -111,
		-112, -113, -114, -115, -118, -119, -120, -121, -122, -123, -124, -125, -127}
	seen := map[string]bool{}
	for _, c := range codes {
		n := ErrName(c)
		if strings.HasPrefix(n, "Unknown(") || seen[n] {
			t.Errorf("code %d has name %q", c, n)
		}
		seen[n] = true
	}
	if len(errNames) != len(codes) {
		t.Errorf("errNames has %d entries, section 5 lists %d codes", len(errNames), len(codes))
	}
}

// TestVectorMinItemSizes pins each vector's minimum item size: N items of the
// smallest encoding decode, and the same count with one byte fewer fails
// before allocating the N-element slice (which the heap measurement would
// see: 10000 items are at least 160 KB of slice).
func TestVectorMinItemSizes(t *testing.T) {
	const n = 10000
	for _, tc := range []struct {
		name    string
		minItem int
		decode  func(d *Decoder) int
	}{
		{"vector<ustring>", 4, func(d *Decoder) int { return len(d.Strings()) }},
		{"vector<ACL>", 12, func(d *Decoder) int { return len(decodeACLs(d)) }},
		{"vector<ClientInfo>", 8, func(d *Decoder) int {
			var r WhoAmIResponse
			r.Decode(d)
			return len(r.ClientInfo)
		}},
	} {
		var e Encoder
		e.Int(n)
		e.B = append(e.B, make([]byte, n*tc.minItem)...)
		d := NewDecoder(e.B)
		if got := tc.decode(d); got != n || d.Done() != nil {
			t.Errorf("%s: %d smallest items decoded as %d, %v", tc.name, n, got, d.Done())
		}
		short := e.B[:len(e.B)-1]
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		d = NewDecoder(short)
		tc.decode(d)
		runtime.ReadMemStats(&after)
		if d.Err() == nil {
			t.Errorf("%s: %d items in %d bytes accepted", tc.name, n, len(short)-4)
		}
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<10 {
			t.Errorf("%s: a count that cannot fit allocated %d bytes before failing", tc.name, grew)
		}
	}
}
