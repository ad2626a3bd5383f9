package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// A snapshot file is a 64-byte header and the state machine's bytes:
//
//	magic u32 "HRDS" | version u32 | index u64 | term u64 | zxid u64 |
//	data length u64 | crc32c(data) u32 | crc32c(rest of header) u32 |
//	wal seq u64 | flags u8 | 7 zero bytes
//
// Flag 1 (voids older log) marks a snapshot a follower installed in place
// of a conflicting log: entries after it in segments older than wal seq are
// void. Recovery then cannot graft the old suffix onto the new snapshot, even
// if the server crashed before writing the segment that starts after it.
//
// It is written as <name>.tmp, fsynced, renamed, and the directory fsynced,
// so a crash leaves either the old snapshot or the new one, never half of
// one under a real name. An incremental snapshot's image is written in
// pieces as it is encoded and the header last; the data checksum is what
// catches a piece that was lost, torn or misdirected. The same bytes are what a leader streams to a
// follower, which verifies both checksums before installing.

const (
	snapMagic   = 0x48524453
	snapVersion = 1
	snapHeader  = 64
)

type snapMeta struct {
	Index Index
	Term  Term
	Zxid  Zxid
	// VoidsOlderLog: entries after Index in segments with a sequence
	// number below WALSeq are void.
	VoidsOlderLog bool
	WALSeq        uint64
}

func encodeSnapshot(meta snapMeta, data []byte) []byte {
	return append(snapshotHeader(meta, uint64(len(data)), crc32.Checksum(data, castagnoli)), data...)
}

// snapshotHeader is the file's header for dataLen bytes of data whose
// CRC-32C is dataCRC.
func snapshotHeader(meta snapMeta, dataLen uint64, dataCRC uint32) []byte {
	out := make([]byte, snapHeader)
	binary.BigEndian.PutUint32(out[0:], snapMagic)
	binary.BigEndian.PutUint32(out[4:], snapVersion)
	binary.BigEndian.PutUint64(out[8:], uint64(meta.Index))
	binary.BigEndian.PutUint64(out[16:], uint64(meta.Term))
	binary.BigEndian.PutUint64(out[24:], uint64(meta.Zxid))
	binary.BigEndian.PutUint64(out[32:], dataLen)
	binary.BigEndian.PutUint32(out[40:], dataCRC)
	binary.BigEndian.PutUint64(out[48:], meta.WALSeq)
	if meta.VoidsOlderLog {
		out[56] = 1
	}
	binary.BigEndian.PutUint32(out[44:], snapHeaderCRC(out))
	return out
}

func snapHeaderCRC(h []byte) uint32 {
	return crc32.Update(crc32.Checksum(h[:44], castagnoli), castagnoli, h[48:snapHeader])
}

var errBadSnapshot = errors.New("raft: damaged snapshot")

// decodeSnapshot verifies a whole snapshot file. data aliases file.
func decodeSnapshot(file []byte) (meta snapMeta, data []byte, err error) {
	if len(file) < snapHeader {
		return meta, nil, fmt.Errorf("%w: %d bytes", errBadSnapshot, len(file))
	}
	meta, n, sum, err := decodeSnapshotHeader(file[:snapHeader])
	if err != nil {
		return meta, nil, err
	}
	if n != uint64(len(file)-snapHeader) {
		return meta, nil, fmt.Errorf("%w: header says %d data bytes, file has %d", errBadSnapshot, n, len(file)-snapHeader)
	}
	data = file[snapHeader:]
	if crc32.Checksum(data, castagnoli) != sum {
		return meta, nil, fmt.Errorf("%w: data checksum", errBadSnapshot)
	}
	return meta, data, nil
}

// checkSnapshotHeader is decodeSnapshotHeader for the header of a snapshot
// file of fileSize bytes that must hold index: the header must say so, and
// count the data the file holds after it.
func checkSnapshotHeader(h []byte, index Index, fileSize uint64) (meta snapMeta, dataCRC uint32, err error) {
	meta, n, sum, err := decodeSnapshotHeader(h)
	switch {
	case err != nil:
		return meta, 0, err
	case meta.Index != index:
		return meta, 0, fmt.Errorf("%w: holds index %d, not %d", errBadSnapshot, meta.Index, index)
	case fileSize < snapHeader || n != fileSize-snapHeader:
		return meta, 0, fmt.Errorf("%w: header says %d data bytes, file has %d", errBadSnapshot, n, int64(fileSize)-snapHeader)
	}
	return meta, sum, nil
}

// decodeSnapshotHeader verifies a snapshot file's header and returns what
// it says: the snapshot, and the length and checksum of the data after it.
func decodeSnapshotHeader(h []byte) (meta snapMeta, dataLen uint64, dataCRC uint32, err error) {
	if len(h) != snapHeader || binary.BigEndian.Uint32(h[0:]) != snapMagic || binary.BigEndian.Uint32(h[4:]) != snapVersion ||
		binary.BigEndian.Uint32(h[44:]) != snapHeaderCRC(h) {
		return meta, 0, 0, fmt.Errorf("%w: bad header", errBadSnapshot)
	}
	meta = snapMeta{Index: Index(binary.BigEndian.Uint64(h[8:])), Term: Term(binary.BigEndian.Uint64(h[16:])), Zxid: Zxid(binary.BigEndian.Uint64(h[24:])),
		WALSeq: binary.BigEndian.Uint64(h[48:]), VoidsOlderLog: h[56]&1 != 0}
	return meta, binary.BigEndian.Uint64(h[32:]), binary.BigEndian.Uint32(h[40:]), nil
}
