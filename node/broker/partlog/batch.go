package partlog

import (
	"encoding/binary"
	"hash/crc32"
)

// The RecordBatch v2 header. For magic 2 every field before the records has
// a fixed size and position, so reading it is a handful of big-endian loads
// at constant offsets: no codec, no allocation, and no dependence on a Kafka
// client library whose decoder would also parse (and allocate for) every
// record, which the append path must never do.
const (
	offBaseOffset     = 0  // int64, rewritten on append (outside the CRC)
	offBatchLength    = 8  // int32, bytes after this field
	offLeaderEpoch    = 12 // int32, rewritten on append (outside the CRC)
	offMagic          = 16 // int8
	offCRC            = 17 // uint32, CRC-32C of bytes [offAttributes, end)
	offAttributes     = 21 // int16
	offLastDelta      = 23 // int32
	offFirstTimestamp = 27 // int64
	offMaxTimestamp   = 35 // int64
	offRecordCount    = 57 // int32
	batchHeaderSize   = 61
	// lengthPrefix is what precedes the bytes batchLength counts.
	lengthPrefix = 12

	attrCodecMask     = 0x07
	attrLogAppendTime = 0x08
	attrControl       = 0x20
	maxCodec          = 4 // zstd

	// minRecordSize is the smallest encoding of one record (length,
	// attributes, timestamp delta, offset delta, key length, value length
	// and header count, one byte each): an uncompressed batch claiming more
	// records than fit is lying about its count.
	minRecordSize = 7
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// batchHeader is the part of a batch partlog looks at.
type batchHeader struct {
	baseOffset      int64
	size            int // the whole batch, length prefix included
	attributes      int16
	lastOffsetDelta int32
	firstTimestamp  int64
	maxTimestamp    int64
	recordCount     int32
}

func (h *batchHeader) lastOffset() int64 { return h.baseOffset + int64(h.lastOffsetDelta) }
func (h *batchHeader) nextOffset() int64 { return h.lastOffset() + 1 }

// peekSize returns the whole size of the batch starting at b, or -1 when
// fewer than lengthPrefix bytes are there or the length is impossible.
func peekSize(b []byte) int {
	if len(b) < lengthPrefix {
		return -1
	}
	n := int32(binary.BigEndian.Uint32(b[offBatchLength:]))
	if n < batchHeaderSize-lengthPrefix {
		return -1
	}
	return int(n) + lengthPrefix
}

// parseBatch checks the batch at the start of b (b may hold more after it):
// a v2 header whose length fits in b, a matching CRC, a positive record
// count agreeing with lastOffsetDelta. It is the check both for what a
// producer sends and for what recovery and reads find on disk; Append adds
// its own policy checks (size limit, control batches, codecs) on top.
func parseBatch(b []byte) (batchHeader, error) { return parseBatchCRC(b, true) }

// parseBatchCRC is parseBatch with the CRC check optional, for the planted
// bug BugServeTorn only.
func parseBatchCRC(b []byte, checkCRC bool) (batchHeader, error) {
	var h batchHeader
	if len(b) <= offMagic {
		return h, ErrCorrupt
	}
	switch magic := int8(b[offMagic]); {
	case magic == 0 || magic == 1:
		return h, ErrUnsupportedMagic
	case magic != 2:
		return h, ErrCorrupt
	}
	size := peekSize(b)
	if size < 0 || size > len(b) {
		return h, ErrCorrupt
	}
	b = b[:size]
	if checkCRC && crc32.Checksum(b[offAttributes:], castagnoli) != binary.BigEndian.Uint32(b[offCRC:]) {
		return h, ErrCorrupt
	}
	h = batchHeader{
		baseOffset:      int64(binary.BigEndian.Uint64(b[offBaseOffset:])),
		size:            size,
		attributes:      int16(binary.BigEndian.Uint16(b[offAttributes:])),
		lastOffsetDelta: int32(binary.BigEndian.Uint32(b[offLastDelta:])),
		firstTimestamp:  int64(binary.BigEndian.Uint64(b[offFirstTimestamp:])),
		maxTimestamp:    int64(binary.BigEndian.Uint64(b[offMaxTimestamp:])),
		recordCount:     int32(binary.BigEndian.Uint32(b[offRecordCount:])),
	}
	if h.recordCount <= 0 || h.lastOffsetDelta != h.recordCount-1 {
		return h, ErrInvalidRecord
	}
	if h.attributes&attrCodecMask == 0 && int64(h.recordCount)*minRecordSize > int64(size-batchHeaderSize) {
		return h, ErrInvalidRecord
	}
	return h, nil
}

// crcOK says whether the CRC of the whole batch b matches.
func crcOK(b []byte) bool {
	return crc32.Checksum(b[offAttributes:], castagnoli) == binary.BigEndian.Uint32(b[offCRC:])
}

// validateAppend checks what a producer sent and returns the batches'
// headers (appended to hs, so the caller can reuse the slice) and the total
// record count. Nothing is modified.
func validateAppend(b []byte, maxBatch int, hs []batchHeader) ([]batchHeader, int64, error) {
	if len(b) == 0 {
		return hs, 0, ErrInvalidRecord
	}
	var records int64
	for len(b) > 0 {
		if size := peekSize(b); size > maxBatch && len(b) > offMagic && b[offMagic] == 2 {
			// Checked before the CRC so an oversized batch costs nothing.
			return hs, 0, ErrTooLarge
		}
		h, err := parseBatch(b)
		if err != nil {
			return hs, 0, err
		}
		if h.attributes&attrControl != 0 || int(h.attributes&attrCodecMask) > maxCodec {
			// Control batches are the broker's own (transaction markers);
			// an unknown codec could not be served to any consumer.
			return hs, 0, ErrInvalidRecord
		}
		hs = append(hs, h)
		records += int64(h.recordCount)
		b = b[h.size:]
	}
	return hs, records, nil
}

// stampBatch rewrites the two fields outside the CRC that the broker owns.
func stampBatch(b []byte, baseOffset int64, leaderEpoch int32) {
	binary.BigEndian.PutUint64(b[offBaseOffset:], uint64(baseOffset))
	binary.BigEndian.PutUint32(b[offLeaderEpoch:], uint32(leaderEpoch))
}

// stampLogAppendTime marks the batch as LogAppendTime with maxTimestamp ts.
// Both fields are inside the CRC, so it is recomputed: the only case where
// the broker touches CRC-covered bytes (as Kafka's LogValidator does).
func stampLogAppendTime(b []byte, ts int64) {
	attrs := binary.BigEndian.Uint16(b[offAttributes:]) | attrLogAppendTime
	binary.BigEndian.PutUint16(b[offAttributes:], attrs)
	binary.BigEndian.PutUint64(b[offMaxTimestamp:], uint64(ts))
	binary.BigEndian.PutUint32(b[offCRC:], crc32.Checksum(b[offAttributes:], castagnoli))
}

// findTimestamp returns the first record of an intact batch whose timestamp
// is at least ts, as (offset, timestamp); ok is false if an uncompressed
// batch has none (its maxTimestamp overstated its records). Records are decoded only here, and
// only for uncompressed batches: a compressed batch answers with its base
// offset, which is at or before the exact record (a consumer starting there
// sees a few earlier records, never misses one).
func findTimestamp(b []byte, h *batchHeader, ts int64) (offset, timestamp int64, ok bool) {
	if h.attributes&attrLogAppendTime != 0 {
		return h.baseOffset, h.maxTimestamp, true
	}
	if h.attributes&attrCodecMask != 0 {
		if h.firstTimestamp >= ts {
			return h.baseOffset, h.firstTimestamp, true
		}
		return h.baseOffset, h.maxTimestamp, true
	}
	rest := b[batchHeaderSize:h.size]
	for i := int32(0); i < h.recordCount && len(rest) > 0; i++ {
		length, n := binary.Varint(rest)
		if n <= 0 || length < 0 || int64(len(rest)-n) < length {
			break
		}
		rec := rest[n : n+int(length)]
		rest = rest[n+int(length):]
		if len(rec) < 1 {
			break
		}
		tsDelta, m := binary.Varint(rec[1:]) // after the attributes byte
		if m <= 0 {
			break
		}
		offDelta, k := binary.Varint(rec[1+m:])
		if k <= 0 {
			break
		}
		if t := h.firstTimestamp + tsDelta; t >= ts {
			return h.baseOffset + offDelta, t, true
		}
		if i == h.recordCount-1 {
			return 0, 0, false
		}
	}
	// Malformed records under a valid CRC are the producer's doing; the
	// batch as a whole is still the answer.
	return h.baseOffset, h.maxTimestamp, true
}
