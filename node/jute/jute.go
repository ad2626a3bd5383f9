// Package jute is ZooKeeper's wire codec: the primitives of Apache jute's
// BinaryOutputArchive/BinaryInputArchive and the records of zookeeper.jute
// that clients put on the wire (kazoo, go-zookeeper, the Java and C clients).
//
// It is a core package (see package node): pure functions over byte slices,
// no I/O. Framing (the 4-byte length in front of every packet) belongs to
// package frame; this package encodes and decodes frame bodies.
//
// The primitives, as BinaryOutputArchive writes them:
//
//	int      4 bytes, big-endian, signed
//	long     8 bytes, big-endian, signed
//	boolean  1 byte, 0 or 1 (any non-zero byte reads as true, like DataInput.readBoolean)
//	ustring  int length + UTF-8 bytes; a null string has length -1
//	buffer   int length + bytes; null has length -1
//	vector   int count + items; null has count -1
//	record   its fields in declaration order, no tags, no padding
//
// Decoding is hostile-input safe: a Decoder never allocates more than a small
// constant multiple of the bytes it was given, because every length or count
// is checked against the bytes that remain before anything is allocated (a
// count of N items needs at least N times the smallest encoding of an item).
// The server reads requests from untrusted clients, and a 20-byte packet
// must not be able to ask for a 2^31-element vector.
//
// Strings are carried as raw bytes in both directions, without UTF-8
// validation: Java would replace malformed UTF-8 with U+FFFD, but every place
// where the content matters for ZooKeeper semantics (paths) goes through
// ValidatePath, which rejects malformed UTF-8 exactly when Java's validator
// would reject the U+FFFD it became.
package jute

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every decoding error: truncated input, a bad
// length or count, bytes left over, an op type that does not belong in a
// multi. A server answers a request that fails to decode the way ZooKeeper
// does when deserialization throws: by dropping the connection.
var ErrMalformed = errors.New("jute: malformed input")

// Record is implemented by every jute record in this package.
type Record interface {
	Encode(e *Encoder)
	Decode(d *Decoder)
}

// Marshal returns r's encoding.
func Marshal(r Record) []byte {
	var e Encoder
	r.Encode(&e)
	return e.B
}

// Unmarshal decodes b into r and insists that b holds exactly one record:
// a short or over-long body is an error.
func Unmarshal(b []byte, r Record) error {
	d := NewDecoder(b)
	r.Decode(d)
	return d.Done()
}

// Encoder appends jute primitives to B (big-endian, as BinaryOutputArchive).
// The zero value is ready to use; set B to append to an existing buffer (for
// instance one that already holds a ReplyHeader).
type Encoder struct{ B []byte }

// Int appends a jute int.
func (e *Encoder) Int(v int32) { e.B = binary.BigEndian.AppendUint32(e.B, uint32(v)) }

// Long appends a jute long.
func (e *Encoder) Long(v int64) { e.B = binary.BigEndian.AppendUint64(e.B, uint64(v)) }

// Bool appends a jute boolean as one byte, 1 or 0.
func (e *Encoder) Bool(v bool) {
	if v {
		e.B = append(e.B, 1)
	} else {
		e.B = append(e.B, 0)
	}
}

// String appends a ustring: its length, then its bytes. Go strings cannot be
// null, so this never writes length -1.
func (e *Encoder) String(s string) {
	e.Int(int32(len(s)))
	e.B = append(e.B, s...)
}

// Buffer appends a buffer. nil is written as length -1 (null), an empty
// non-nil slice as length 0; a decoder gives back the same distinction.
func (e *Encoder) Buffer(b []byte) {
	if b == nil {
		e.Int(-1)
		return
	}
	e.Int(int32(len(b)))
	e.B = append(e.B, b...)
}

// Strings appends a vector<ustring>. nil is written as count -1 (null).
func (e *Encoder) Strings(v []string) {
	if v == nil {
		e.Int(-1)
		return
	}
	e.Int(int32(len(v)))
	for _, s := range v {
		e.String(s)
	}
}

// Decoder reads jute primitives from a byte slice. The first error sticks:
// every later read returns a zero value and Err keeps reporting the first
// problem, so record decoders can read all their fields and check once.
//
// Beware that String makes *Decoder a fmt.Stringer: formatting a Decoder with
// %v or %s consumes a string from it. Log d.Err() or d.Remaining() instead.
// For the same reason go vet insists that String's result be used; skip a
// field with `_ = d.String()`.
type Decoder struct {
	b   []byte
	off int
	err error
}

// NewDecoder returns a Decoder reading b. b is not modified, and nothing the
// Decoder returns aliases it (Buffer copies, String converts).
func NewDecoder(b []byte) *Decoder { return &Decoder{b: b} }

// Err returns the first error the Decoder met, or nil.
func (d *Decoder) Err() error { return d.err }

// Remaining returns the number of bytes not yet consumed.
func (d *Decoder) Remaining() int { return len(d.b) - d.off }

// Done returns the first error, or an error if bytes are left over. Call it
// after decoding a whole packet body: leftover bytes mean the sender and
// receiver disagree about the record's layout.
func (d *Decoder) Done() error {
	if d.err != nil {
		return d.err
	}
	if n := d.Remaining(); n > 0 {
		return fmt.Errorf("%w: %d trailing bytes at offset %d", ErrMalformed, n, d.off)
	}
	return nil
}

// Fail records err (wrapped in ErrMalformed) as the Decoder's error unless one
// is already recorded. Record decoders use it for semantic errors found while
// decoding, such as an op type that is not allowed in a multi.
func (d *Decoder) Fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s (offset %d)", ErrMalformed, fmt.Sprintf(format, args...), d.off)
	}
}

// take returns the next n bytes, or nil after recording an error if fewer
// than n remain (or an error is already recorded).
func (d *Decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n > d.Remaining() {
		d.Fail("truncated %s: need %d bytes, have %d", what, n, d.Remaining())
		return nil
	}
	b := d.b[d.off : d.off+n]
	d.off += n
	return b
}

// Int reads a jute int.
func (d *Decoder) Int() int32 {
	b := d.take(4, "int")
	if b == nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(b))
}

// Long reads a jute long.
func (d *Decoder) Long() int64 {
	b := d.take(8, "long")
	if b == nil {
		return 0
	}
	return int64(binary.BigEndian.Uint64(b))
}

// Bool reads a jute boolean. Any non-zero byte is true, as in Java's
// DataInput.readBoolean, so a client that sends 2 means what Java thinks.
func (d *Decoder) Bool() bool {
	b := d.take(1, "boolean")
	return b != nil && b[0] != 0
}

// length reads a length or count prefix. It returns -1 for null. Any other
// negative value is an error, and so is a count whose items could not fit in
// the remaining bytes (n*minItem > Remaining), which is what keeps
// allocations bounded by the input size. minItem must be at least 1.
func (d *Decoder) length(minItem int, what string) int {
	at := d.off
	n := d.Int()
	if d.err != nil {
		return -1
	}
	switch {
	case n == -1:
		return -1
	case n < 0:
		d.off = at
		d.Fail("negative %s length %d", what, n)
		return -1
	case int64(n)*int64(minItem) > int64(d.Remaining()):
		d.off = at
		d.Fail("%s length %d needs at least %d bytes, have %d", what, n, int64(n)*int64(minItem), d.Remaining())
		return -1
	}
	return int(n)
}

// StringOK reads a ustring and reports whether it was null (length -1). A
// null string reads as "".
func (d *Decoder) StringOK() (s string, null bool) {
	n := d.length(1, "string")
	if n < 0 {
		return "", d.err == nil
	}
	return string(d.take(n, "string")), false
}

// String reads a ustring; null reads as "" (use StringOK to tell them apart).
func (d *Decoder) String() string {
	s, _ := d.StringOK()
	return s
}

// Buffer reads a buffer. Null (length -1) reads as nil and an empty buffer as
// a non-nil empty slice. The result is a copy: callers may keep it after the
// input is reused (frame.Reader reuses its buffer).
func (d *Decoder) Buffer() []byte {
	n := d.length(1, "buffer")
	if n < 0 {
		return nil
	}
	b := d.take(n, "buffer")
	if b == nil {
		return nil
	}
	out := make([]byte, n)
	copy(out, b)
	return out
}

// BufferView reads a buffer without copying it: b aliases the input (valid
// only while it is), and null reads as nil.
func (d *Decoder) BufferView() (b []byte, null bool) {
	n := d.length(1, "buffer")
	if n < 0 {
		return nil, d.err == nil
	}
	return d.take(n, "buffer"), false
}

// Strings reads a vector<ustring>; null reads as nil. Each string takes at
// least its 4-byte length.
func (d *Decoder) Strings() []string {
	return decodeVector(d, 4, "vector<ustring>", func(d *Decoder, s *string) { *s = d.String() })
}

// decodeVector reads a vector whose items each take at least minItem bytes.
// Null reads as nil, an empty vector as a non-nil empty slice. On error the
// partial result is dropped.
func decodeVector[T any](d *Decoder, minItem int, what string, item func(*Decoder, *T)) []T {
	n := d.length(minItem, what)
	if n < 0 {
		return nil
	}
	out := make([]T, n)
	for i := range out {
		item(d, &out[i])
		if d.err != nil {
			return nil
		}
	}
	return out
}

// encodeVector writes a vector; nil is written as count -1 (null).
func encodeVector[T any](e *Encoder, v []T, item func(*Encoder, *T)) {
	if v == nil {
		e.Int(-1)
		return
	}
	e.Int(int32(len(v)))
	for i := range v {
		item(e, &v[i])
	}
}
