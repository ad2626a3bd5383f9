package kafkaclient

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// castagnoli is the CRC-32C table RecordBatch v2 checksums use.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// batchHeaderSize is RecordBatch v2's fixed header: baseOffset(8) length(4)
// partitionLeaderEpoch(4) magic(1) crc(4) attributes(2) lastOffsetDelta(4)
// firstTimestamp(8) maxTimestamp(8) producerId(8) producerEpoch(2)
// baseSequence(4) recordCount(4).
const batchHeaderSize = 61

// crcStart is where the CRC's coverage begins: the attributes field, right
// after the crc itself.
const crcStart = 21

// EncodeBatch builds one uncompressed RecordBatch v2 holding values, keyless,
// without idempotence (producer id -1), stamped with timestamp ms. The
// records are encoded with kmsg; lengths and the CRC-32C are computed here
// because kmsg leaves them to the caller.
func EncodeBatch(values [][]byte, timestamp int64) []byte {
	var recs, tmp []byte
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), Value: v}
		// Record.Length is the size of everything after it, so encode once
		// with a zero length (one varint byte) to measure the body.
		tmp = r.AppendTo(tmp[:0])
		body := tmp[1:]
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	b := kmsg.RecordBatch{
		FirstOffset:          0,
		Length:               int32(batchHeaderSize - 12 + len(recs)),
		PartitionLeaderEpoch: -1,
		Magic:                2,
		LastOffsetDelta:      int32(len(values) - 1),
		FirstTimestamp:       timestamp,
		MaxTimestamp:         timestamp,
		ProducerID:           -1,
		ProducerEpoch:        -1,
		FirstSequence:        -1,
		NumRecords:           int32(len(values)),
		Records:              recs,
	}
	out := b.AppendTo(make([]byte, 0, batchHeaderSize+len(recs)))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[crcStart:], castagnoli))
	return out
}

// Batch is one record batch of a fetch response, decoded and verified.
type Batch struct {
	BaseOffset      int64
	LastOffsetDelta int32
	NumRecords      int32
	// CRCValid: the stored CRC-32C matches the batch's bytes.
	CRCValid bool
	// Problem says why the batch could not be decoded whole ("" if it
	// could): cut short, a bad magic, records that do not add up.
	Problem string
	// Records are the records decoded, in the order stored, each at
	// BaseOffset plus its offset delta.
	Records []Record
}

// Record is one fetched record.
type Record struct {
	Offset int64
	Value  []byte
}

// DecodeBatches splits a fetch response's record set into batches and
// decodes each. It never fails: what is wrong with a batch is reported in
// the batch, for the checker to judge.
func DecodeBatches(set []byte) []Batch {
	var out []Batch
	for len(set) > 0 {
		if len(set) < 12 {
			out = append(out, Batch{Problem: fmt.Sprintf("%d trailing bytes, less than a batch's offset and length", len(set))})
			return out
		}
		base := int64(binary.BigEndian.Uint64(set))
		n := int64(int32(binary.BigEndian.Uint32(set[8:])))
		if n < batchHeaderSize-12 || int64(len(set)-12) < n {
			out = append(out, Batch{BaseOffset: base, Problem: fmt.Sprintf("batch at %d of length %d with %d bytes left: not whole", base, n, len(set)-12)})
			return out
		}
		out = append(out, decodeBatch(set[:12+n]))
		set = set[12+n:]
	}
	return out
}

func decodeBatch(raw []byte) Batch {
	b := Batch{
		BaseOffset:      int64(binary.BigEndian.Uint64(raw)),
		LastOffsetDelta: int32(binary.BigEndian.Uint32(raw[23:])),
		NumRecords:      int32(binary.BigEndian.Uint32(raw[57:])),
	}
	b.CRCValid = binary.BigEndian.Uint32(raw[17:]) == crc32.Checksum(raw[crcStart:], castagnoli)
	if magic := raw[16]; magic != 2 {
		b.Problem = fmt.Sprintf("magic %d", magic)
		return b
	}
	if attrs := binary.BigEndian.Uint16(raw[21:]); attrs&0x07 != 0 {
		b.Problem = fmt.Sprintf("compressed (attributes 0x%x); this client never compresses", attrs)
		return b
	}
	if b.NumRecords < 0 || int(b.NumRecords) > len(raw) {
		b.Problem = fmt.Sprintf("record count %d", b.NumRecords)
		return b
	}
	recs := raw[batchHeaderSize:]
	b.Records = make([]Record, 0, b.NumRecords)
	for i := int32(0); i < b.NumRecords; i++ {
		length, n := binary.Varint(recs)
		if n <= 0 || length < 0 || int64(len(recs)-n) < length {
			b.Problem = fmt.Sprintf("record %d of %d: bad length", i, b.NumRecords)
			return b
		}
		delta, value, err := parseRecord(recs[n : n+int(length)])
		if err != "" {
			b.Problem = fmt.Sprintf("record %d of %d: %s", i, b.NumRecords, err)
			return b
		}
		b.Records = append(b.Records, Record{Offset: b.BaseOffset + int64(delta), Value: value})
		recs = recs[n+int(length):]
	}
	if len(recs) != 0 {
		b.Problem = fmt.Sprintf("%d bytes after the %d records the header counts", len(recs), b.NumRecords)
	}
	return b
}

// parseRecord decodes one record's body (after its length) and checks that
// it is consumed exactly.
func parseRecord(r []byte) (offsetDelta int32, value []byte, problem string) {
	if len(r) < 1 {
		return 0, nil, "empty"
	}
	r = r[1:] // attributes
	varint := func() (int64, bool) {
		v, n := binary.Varint(r)
		if n <= 0 {
			return 0, false
		}
		r = r[n:]
		return v, true
	}
	bytesField := func() ([]byte, bool) {
		n, ok := varint()
		if !ok || n > int64(len(r)) || n < -1 {
			return nil, false
		}
		if n < 0 {
			return nil, true
		}
		v := r[:n:n]
		r = r[n:]
		return v, true
	}
	if _, ok := varint(); !ok { // timestamp delta
		return 0, nil, "bad timestamp delta"
	}
	d, ok := varint()
	if !ok {
		return 0, nil, "bad offset delta"
	}
	if _, ok := bytesField(); !ok {
		return 0, nil, "bad key"
	}
	v, ok := bytesField()
	if !ok {
		return 0, nil, "bad value"
	}
	headers, ok := varint()
	if !ok || headers < 0 || headers > int64(len(r)) {
		return 0, nil, "bad header count"
	}
	for range headers {
		if _, ok := bytesField(); !ok {
			return 0, nil, "bad header key"
		}
		if _, ok := bytesField(); !ok {
			return 0, nil, "bad header value"
		}
	}
	if len(r) != 0 {
		return 0, nil, fmt.Sprintf("%d bytes left over", len(r))
	}
	return int32(d), append([]byte(nil), v...), ""
}
