// Package frame splits a TCP byte stream into length-prefixed frames: a 4-byte
// big-endian length followed by that many bytes. ZooKeeper's jute protocol,
// Kafka's protocol and herd's internal protocols all frame this way.
//
// The network may deliver a frame in many pieces or several frames in one
// piece (netsim does both on purpose), so a Reader buffers until a frame is
// complete.
package frame

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrTooLarge means a frame's length prefix exceeds the Reader's limit (or is
// negative). The stream cannot be resynchronised; close the connection.
var ErrTooLarge = errors.New("frame: length exceeds limit")

// Reader reassembles frames from a byte stream.
type Reader struct {
	buf []byte
	off int // start of unconsumed bytes in buf
	max int
}

// NewReader returns a Reader that rejects frames longer than max bytes.
func NewReader(max int) *Reader { return &Reader{max: max} }

// Feed appends bytes received from the stream. Frames returned by Next before
// this call become invalid.
func (r *Reader) Feed(data []byte) {
	if r.off > 0 && r.off == len(r.buf) {
		r.buf, r.off = r.buf[:0], 0
	} else if r.off > 0 && r.off >= cap(r.buf)/2 {
		n := copy(r.buf, r.buf[r.off:])
		r.buf, r.off = r.buf[:n], 0
	}
	r.buf = append(r.buf, data...)
}

// Next returns the next complete frame's body (without its length prefix), or
// ok=false if more bytes are needed. The body aliases the Reader's buffer and
// stays valid until the next Feed.
func (r *Reader) Next() (body []byte, ok bool, err error) {
	avail := r.buf[r.off:]
	if len(avail) < 4 {
		return nil, false, nil
	}
	n := int64(int32(binary.BigEndian.Uint32(avail)))
	if n < 0 || n > int64(r.max) {
		return nil, false, fmt.Errorf("%w: %d bytes (limit %d)", ErrTooLarge, n, r.max)
	}
	if int64(len(avail)-4) < n {
		return nil, false, nil
	}
	body = avail[4 : 4+n : 4+n]
	r.off += 4 + int(n)
	return body, true, nil
}

// Buffered is the number of bytes received but not yet returned as frames.
func (r *Reader) Buffered() int { return len(r.buf) - r.off }

// Append appends a frame with the given body to dst.
func Append(dst, body []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...)
}
