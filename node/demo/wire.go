// Package demo is a small protocol that exercises every part of the
// core/shell contract, so the simulator and the production shell can be
// tested before the keeper and broker exist. It is test scaffolding, not a
// feature.
//
// A demo server keeps an append-only log file of checksummed records. Clients
// send appends; the server group-commits them (one write and one fsync per
// batch) and acknowledges each with its log offset, only once the batch is
// durable (Env.SendAfter). Servers also heartbeat each other over long-lived
// connections. Every frame carries a per-connection sequence number, so a
// receiver notices if the byte stream was ever reordered, duplicated or
// truncated mid-stream.
//
// Wire format: frames as in package frame; the body starts with a type byte.
//
//	append   0x01 seq:u64 payload        client -> server
//	appended 0x02 seq:u64 offset:u64     server -> client
//	ping     0x03 seq:u64                server -> server
//
// Log record: len:u32 crc32c(payload):u32 payload. A zero length is never
// written, so a zero-filled hole left by a crash can never parse as a record.
package demo

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
)

const (
	msgAppend   = 0x01
	msgAppended = 0x02
	msgPing     = 0x03

	// MaxPayload bounds one record; MaxFrame one frame.
	MaxPayload = 64 << 10
	MaxFrame   = MaxPayload + 16
	recHeader  = 8
	logFile    = "log"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendFrame(dst []byte, typ byte, seq uint64, tail []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(9+len(tail)))
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, seq)
	return append(dst, tail...)
}

func parseFrame(body []byte) (typ byte, seq uint64, tail []byte, err error) {
	if len(body) < 9 {
		return 0, 0, nil, errors.New("demo: short frame")
	}
	return body[0], binary.BigEndian.Uint64(body[1:9]), body[9:], nil
}

// Record is one entry of a server's log.
type Record struct {
	Off     int64
	Payload []byte
}

func appendRecord(dst, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(payload)))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(payload, castagnoli))
	return append(dst, payload...)
}

// ParseLog returns the valid records at the start of data and the length of
// that valid prefix. Parsing stops at the first record that is short, empty,
// oversized or fails its checksum: everything from there on is a torn or
// corrupt tail. checkCRC exists only so a planted bug can switch it off.
func ParseLog(data []byte, checkCRC bool) (recs []Record, valid int64) {
	off := 0
	for len(data)-off >= recHeader {
		n := int(binary.BigEndian.Uint32(data[off:]))
		sum := binary.BigEndian.Uint32(data[off+4:])
		if n == 0 || n > MaxPayload || len(data)-off-recHeader < n {
			break
		}
		p := data[off+recHeader : off+recHeader+n]
		if checkCRC && crc32.Checksum(p, castagnoli) != sum {
			break
		}
		recs = append(recs, Record{Off: int64(off), Payload: p})
		off += recHeader + n
	}
	return recs, int64(off)
}
