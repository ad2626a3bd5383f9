package raft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"
)

// The write-ahead log is a sequence of segment files, each a sequence of
// batches. One batch is one write and one fsync: a group commit of entries and
// hard state. Batches are laid out in whole 512-byte sectors, and every
// sector of a batch starts with a non-zero marker byte:
//
//	sector:  marker(0xA5) | 511 bytes of the batch's logical stream
//	logical: magic u32 | length u32 | crc32c(seq, records) u32 | header crc u32 | seq u64 | records
//
// The header has its own checksum (over magic, length, records crc and seq),
// so a damaged length can never make a complete batch look torn.
//	record:  type u8 | length u32 | body
//
// Because a written sector is never all zeros, recovery can prove that a
// damaged batch is a torn write: the file ends inside it, or one of its
// sectors is all zeros (never written; file systems read unwritten blocks as
// zeros) or fill.
//
// Fill: the writer extends a segment ahead of its batches, Config.WALFill
// bytes at a time, in the same write as a batch, so that most fdatasyncs
// find the file's size and blocks unchanged and write the data alone (on
// ext4 an appending fdatasync also writes the inode and allocation metadata:
// three device writes instead of one). Fill is not zeros, so that it cannot
// be mistaken for data that was lost, and it names its place, so that a
// fill sector written anywhere else reads as damage, not as a clean end:
//
//	fill sector: marker(0x5F) | magic u32 "HRDF" | segment seq u64 | sector number u64 | crc32c u32 | zeros
//
// A sector counts as never written if it is all zeros or the fill of its own
// segment and place. The writer keeps at most one batch unsynced (the next batch's write
// is queued behind the previous fsync), so only the last batch of the last
// segment can be torn, and a torn batch was never acknowledged. Any other
// damage (a checksum failure in a complete batch, a wrong sequence number,
// damage followed by valid batches) is corruption of data that may have been
// acknowledged; the server then repairs from its peers (see Raft.abstain).

const (
	sectorSize   = 512
	sectorMarker = 0xA5
	sectorBody   = sectorSize - 1
	batchMagic   = 0x48524457 // "HRDW"
	fillMarker   = 0x5F
	fillMagic    = 0x48524446 // "HRDF"
	fillHeader   = 25         // marker, magic, seq, sector number, crc
	batchHeader  = 24
	// maxBatch bounds one batch's logical length, so a corrupt length field
	// cannot make recovery allocate without limit.
	maxBatch = 64 << 20
)

const (
	recSegment byte = iota + 1 // first record of every segment
	recState                   // hard state: term, vote, commit, flags
	recEntry                   // a log entry
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// hardState is what must be durable before a server votes or acknowledges.
// It is written to the WAL (with the batch it belongs to) and, whenever
// term, vote, abstain or term unknown change, to the state file too: corruption of one
// copy must not make a server forget a vote. Seq orders the copies.
type hardState struct {
	Seq     uint64
	Term    Term
	Vote    ID
	Commit  Index // a hint: applying up to it at restart is safe
	Abstain bool  // lost data it may have acknowledged; see Raft.abstain
	// TermUnknown: lost the hard state itself; see Raft.termUnknown.
	TermUnknown bool
}

func (h hardState) flags() byte {
	var f byte
	if h.Abstain {
		f |= 1
	}
	if h.TermUnknown {
		f |= 2
	}
	return f
}

// segmentInfo opens every segment, so each file is self-describing.
type segmentInfo struct {
	Seq        uint64 // segment sequence number (also in the file name)
	FirstIndex Index  // index of the first entry the segment may hold
	PrevTerm   Term   // term of the entry at FirstIndex-1
	PrevZxid   Zxid
}

// ---- records ----

func appendRecHeader(dst []byte, typ byte, n int) []byte {
	dst = append(dst, typ)
	return binary.BigEndian.AppendUint32(dst, uint32(n))
}

func appendSegmentRec(dst []byte, s segmentInfo) []byte {
	dst = appendRecHeader(dst, recSegment, 32)
	dst = binary.BigEndian.AppendUint64(dst, s.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.FirstIndex))
	dst = binary.BigEndian.AppendUint64(dst, uint64(s.PrevTerm))
	return binary.BigEndian.AppendUint64(dst, uint64(s.PrevZxid))
}

func appendStateRec(dst []byte, h hardState) []byte {
	dst = appendRecHeader(dst, recState, 33)
	dst = binary.BigEndian.AppendUint64(dst, h.Seq)
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Term))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Vote))
	dst = binary.BigEndian.AppendUint64(dst, uint64(h.Commit))
	return append(dst, h.flags())
}

func appendEntryRec(dst []byte, e *Entry) []byte {
	dst = appendRecHeader(dst, recEntry, 25+len(e.Data))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Index))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Term))
	dst = binary.BigEndian.AppendUint64(dst, uint64(e.Zxid))
	dst = append(dst, byte(e.Type))
	return append(dst, e.Data...)
}

// record is one decoded record; exactly one of the pointers is set.
type record struct {
	seg   *segmentInfo
	state *hardState
	entry *Entry
}

var errBadRecord = errors.New("raft: malformed wal record")

// decodeRecords parses a batch's records. Entry data aliases buf.
func decodeRecords(buf []byte, out []record) ([]record, error) {
	for len(buf) > 0 {
		if len(buf) < 5 {
			return out, errBadRecord
		}
		typ, n := buf[0], int(binary.BigEndian.Uint32(buf[1:5]))
		if n > len(buf)-5 {
			return out, errBadRecord
		}
		b := buf[5 : 5+n]
		buf = buf[5+n:]
		u := func(i int) uint64 { return binary.BigEndian.Uint64(b[8*i:]) }
		switch {
		case typ == recSegment && n == 32:
			out = append(out, record{seg: &segmentInfo{Seq: u(0), FirstIndex: Index(u(1)), PrevTerm: Term(u(2)), PrevZxid: Zxid(u(3))}})
		case typ == recState && n == 33:
			out = append(out, record{state: &hardState{Seq: u(0), Term: Term(u(1)), Vote: ID(u(2)), Commit: Index(u(3)), Abstain: b[32]&1 != 0, TermUnknown: b[32]&2 != 0}})
		case typ == recEntry && n >= 25:
			t := EntryType(b[24])
			if t < EntryNormal || t > EntryConfig {
				return out, errBadRecord
			}
			out = append(out, record{entry: &Entry{Index: Index(u(0)), Term: Term(u(1)), Zxid: Zxid(u(2)), Type: t, Data: b[25:]}})
		default:
			return out, errBadRecord
		}
	}
	return out, nil
}

// ---- batches ----

// physicalLen is the on-disk size of a batch whose records are n bytes.
func physicalLen(n int) int {
	logical := batchHeader + n
	return (logical + sectorBody - 1) / sectorBody * sectorSize
}

// encodeBatch lays records out as sectors, ready to be written at a sector
// boundary.
// maxKeptWriteBuffer bounds the buffer storage keeps for the next batch.
const maxKeptWriteBuffer = 8 << 20

// encodeBatch lays a batch out in dst's memory (growing it if needed; its
// contents are overwritten) and returns it.
func encodeBatch(dst []byte, seq uint64, records []byte) []byte {
	var hdr [batchHeader]byte
	binary.BigEndian.PutUint32(hdr[0:], batchMagic)
	binary.BigEndian.PutUint32(hdr[4:], uint32(len(records)))
	var seqb [8]byte
	binary.BigEndian.PutUint64(seqb[:], seq)
	crc := crc32.Update(crc32.Checksum(seqb[:], castagnoli), castagnoli, records)
	binary.BigEndian.PutUint32(hdr[8:], crc)
	copy(hdr[16:], seqb[:])
	binary.BigEndian.PutUint32(hdr[12:], headerCRC(hdr[:]))

	n := physicalLen(len(records))
	out := slices.Grow(dst[:0], n)[:n]
	clear(out) // padding after the records is zeros
	src := [2][]byte{hdr[:], records}
	part, off := 0, 0
	for s := 0; s < len(out); s += sectorSize {
		out[s] = sectorMarker
		dst := out[s+1 : s+sectorSize]
		for len(dst) > 0 && part < 2 {
			n := copy(dst, src[part][off:])
			dst = dst[n:]
			off += n
			if off == len(src[part]) {
				part, off = part+1, 0
			}
		}
	}
	return out
}

// appendFill appends fill sectors to buf, which will be written at offset
// at of segment seq, up to offset end (both sector multiples).
func appendFill(buf []byte, seq uint64, at, end int64) []byte {
	n := int(end - at)
	buf = slices.Grow(buf, n)
	start := len(buf)
	buf = buf[:start+n]
	clear(buf[start:])
	for off := int64(0); off < int64(n); off += sectorSize {
		sec := buf[start+int(off):]
		sec[0] = fillMarker
		binary.BigEndian.PutUint32(sec[1:], fillMagic)
		binary.BigEndian.PutUint64(sec[5:], seq)
		binary.BigEndian.PutUint64(sec[13:], uint64((at+off)/sectorSize))
		binary.BigEndian.PutUint32(sec[21:], crc32.Checksum(sec[:21], castagnoli))
	}
	return buf
}

// isFill reports whether sec (one sector) is the fill of segment seq at
// sector number no.
func isFill(sec []byte, seq uint64, no int) bool {
	return sec[0] == fillMarker && binary.BigEndian.Uint32(sec[1:]) == fillMagic &&
		binary.BigEndian.Uint64(sec[5:]) == seq && binary.BigEndian.Uint64(sec[13:]) == uint64(no) &&
		binary.BigEndian.Uint32(sec[21:]) == crc32.Checksum(sec[:21], castagnoli) && allZero(sec[fillHeader:])
}

// unwritten reports whether the sector at pos of segment seq was never
// written: zeros, or the segment's own fill for that place.
func unwritten(data []byte, pos int, seq uint64) bool {
	sec := data[pos : pos+sectorSize]
	return allZero(sec) || isFill(sec, seq, pos/sectorSize)
}

// batchStatus is what decodeBatch found at a position.
type batchStatus uint8

const (
	batchOK      batchStatus = iota
	batchEnd                 // nothing was ever written here: EOF or a zero sector
	batchTorn                // started but provably incomplete: short, or a zero sector inside
	batchCorrupt             // complete but wrong: checksum, marker, header or sequence
)

// decodeBatch reads the batch at physical offset pos (a sector boundary) of
// segment segSeq. On batchOK it returns the records and the batch's physical
// length.
func decodeBatch(data []byte, pos int, segSeq, wantSeq uint64) (records []byte, size int, st batchStatus) {
	rest := data[pos:]
	if len(rest) == 0 {
		return nil, 0, batchEnd
	}
	if len(rest) < sectorSize {
		if allZero(rest) {
			return nil, 0, batchEnd
		}
		return nil, 0, batchTorn
	}
	first := rest[:sectorSize]
	if unwritten(data, pos, segSeq) {
		return nil, 0, batchEnd
	}
	hdr := first[1 : 1+batchHeader]
	if first[0] != sectorMarker || binary.BigEndian.Uint32(hdr) != batchMagic ||
		binary.BigEndian.Uint32(hdr[12:]) != headerCRC(hdr) {
		return nil, 0, batchCorrupt
	}
	n := int(binary.BigEndian.Uint32(hdr[4:]))
	if n > maxBatch {
		return nil, 0, batchCorrupt
	}
	size = physicalLen(n)
	torn := size > len(rest)
	for s := sectorSize; s < min(size, len(rest)); s += sectorSize {
		sec := rest[s : s+sectorSize]
		if unwritten(data, pos+s, segSeq) {
			torn = true
		} else if sec[0] != sectorMarker {
			return nil, size, batchCorrupt
		}
	}
	if torn {
		return nil, size, batchTorn
	}
	logical := make([]byte, 0, batchHeader+n)
	for s := 0; s < size; s += sectorSize {
		logical = append(logical, rest[s+1:s+sectorSize]...)
	}
	logical = logical[:batchHeader+n]
	crc := binary.BigEndian.Uint32(logical[8:])
	seq := binary.BigEndian.Uint64(logical[16:])
	records = logical[batchHeader:]
	if crc32.Update(crc32.Checksum(logical[16:24], castagnoli), castagnoli, records) != crc || seq != wantSeq {
		return nil, size, batchCorrupt
	}
	return records, size, batchOK
}

// headerCRC checksums a batch header's fields other than itself.
func headerCRC(hdr []byte) uint32 {
	c := crc32.Checksum(hdr[0:12], castagnoli)
	return crc32.Update(c, castagnoli, hdr[16:24])
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// segmentScan is what recovery learns from one segment file.
type segmentScan struct {
	records  []record
	validEnd int64  // bytes of valid batches from the start
	batches  uint64 // valid batches (the next batch's sequence number)
	damaged  bool   // something follows validEnd that is not a clean end
	// lossy: the damage is not provably a torn last write, so data that
	// was acknowledged may be gone.
	lossy bool
	why   string
}

// scanSegment parses the bytes of segment seq. last says whether it is the
// newest segment: only there can an unsynced (torn) batch exist.
func scanSegment(data []byte, seq uint64, last bool) segmentScan {
	var sc segmentScan
	pos := 0
	for {
		recs, size, st := decodeBatch(data, pos, seq, sc.batches)
		if st == batchOK {
			var err error
			if sc.records, err = decodeRecords(recs, sc.records); err != nil {
				sc.damaged, sc.lossy = true, true
				sc.why = fmt.Sprintf("malformed record in batch %d at byte %d", sc.batches, pos)
				return sc
			}
			pos += size
			sc.batches++
			sc.validEnd = int64(pos)
			continue
		}
		if st == batchEnd {
			if zeros, ok := cleanTail(data, pos, seq); ok {
				// A clean end; zeros after it are a grown file whose data
				// never arrived (fill is the writer's own). Only the
				// newest segment can have zeros there: every batch of an
				// older one, and the fill written with it, was synced
				// before the next segment got anything, so zeros there
				// are damage, and the segments after it (which replay
				// then drops) may hold acknowledged entries.
				sc.damaged = zeros
				if zeros && !last {
					sc.lossy = true
					sc.why = fmt.Sprintf("zeros after batch %d at byte %d in a segment that is not the newest", sc.batches, pos)
				} else if zeros {
					sc.why = fmt.Sprintf("zeros after batch %d at byte %d: an unsynced tail", sc.batches, pos)
				}
				return sc
			}
		}
		sc.damaged = true
		later := validBatchAfter(data, pos+sectorSize)
		switch {
		case later >= 0:
			sc.lossy = true
			sc.why = fmt.Sprintf("damaged batch %d at byte %d is followed by a valid batch at byte %d", sc.batches, pos, later)
		case !last:
			sc.lossy = true
			sc.why = fmt.Sprintf("damaged batch %d at byte %d in a segment that is not the newest", sc.batches, pos)
		case st == batchCorrupt:
			sc.lossy = true
			sc.why = fmt.Sprintf("batch %d at byte %d is complete but fails its checks (corruption, not a torn write)", sc.batches, pos)
		default:
			sc.why = fmt.Sprintf("torn last batch %d at byte %d", sc.batches, pos)
		}
		return sc
	}
}

// cleanTail reports whether everything from pos on was never written (ok),
// and whether that includes zeros rather than fill alone.
func cleanTail(data []byte, pos int, seq uint64) (zeros, ok bool) {
	for ; pos < len(data); pos += sectorSize {
		if pos+sectorSize > len(data) {
			if !allZero(data[pos:]) {
				return false, false
			}
			return true, true
		}
		if allZero(data[pos : pos+sectorSize]) {
			zeros = true
		} else if !isFill(data[pos:pos+sectorSize], seq, pos/sectorSize) {
			return false, false
		}
	}
	return zeros, true
}

// validBatchAfter returns the offset of the first sector at or after from
// where a valid batch (any sequence number) starts, or -1.
func validBatchAfter(data []byte, from int) int {
	for p := from; p+sectorSize <= len(data); p += sectorSize {
		if data[p] != sectorMarker || binary.BigEndian.Uint32(data[p+1:]) != batchMagic {
			continue
		}
		seq := binary.BigEndian.Uint64(data[p+17:])
		// Segment 0 has no fill: a batch with fill inside is not valid.
		if _, _, st := decodeBatch(data, p, 0, seq); st == batchOK {
			return p
		}
	}
	return -1
}

// File names. Segments sort by sequence number; the first index is in the
// name for humans.
func segmentName(seq uint64, first Index) string {
	return fmt.Sprintf("wal-%010d-%020d", seq, first)
}

func parseSegmentName(name string) (seq uint64, first Index, ok bool) {
	var s, f uint64
	if len(name) != len("wal-")+10+1+20 {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(name, "wal-%010d-%020d", &s, &f); err != nil {
		return 0, 0, false
	}
	return s, Index(f), true
}

func snapshotName(index Index) string { return fmt.Sprintf("snap-%020d", index) }

func parseSnapshotName(name string) (Index, bool) {
	var i uint64
	if len(name) != len("snap-")+20 {
		return 0, false
	}
	if _, err := fmt.Sscanf(name, "snap-%020d", &i); err != nil {
		return 0, false
	}
	return Index(i), true
}

// The state file holds the hard state in two 512-byte slots, written
// alternately (by Seq parity), each one sector with its own checksum: a torn
// or corrupt slot leaves the other, a misdirected slot write lands on the
// other slot and is still valid.
//
//	slot: magic u32 "HRDH" | seq u64 | term u64 | vote u64 | commit u64 | flags u8 | crc32c u32 | zeros

const (
	stateFile  = "state"
	stateMagic = 0x48524448
	stateSlot  = sectorSize
)

func encodeStateSlot(h hardState) (off int64, slot []byte) {
	b := make([]byte, stateSlot)
	binary.BigEndian.PutUint32(b[0:], stateMagic)
	binary.BigEndian.PutUint64(b[4:], h.Seq)
	binary.BigEndian.PutUint64(b[12:], uint64(h.Term))
	binary.BigEndian.PutUint64(b[20:], uint64(h.Vote))
	binary.BigEndian.PutUint64(b[28:], uint64(h.Commit))
	b[36] = h.flags()
	binary.BigEndian.PutUint32(b[37:], crc32.Checksum(b[:37], castagnoli))
	return int64(h.Seq%2) * stateSlot, b
}

// decodeStateFile returns the newest valid slot, and how many were valid.
func decodeStateFile(data []byte) (best hardState, valid int) {
	for off := 0; off+stateSlot <= len(data) && off < 2*stateSlot; off += stateSlot {
		b := data[off : off+stateSlot]
		if binary.BigEndian.Uint32(b) != stateMagic || binary.BigEndian.Uint32(b[37:]) != crc32.Checksum(b[:37], castagnoli) {
			continue
		}
		h := hardState{Seq: binary.BigEndian.Uint64(b[4:]), Term: Term(binary.BigEndian.Uint64(b[12:])),
			Vote: ID(binary.BigEndian.Uint64(b[20:])), Commit: Index(binary.BigEndian.Uint64(b[28:])), Abstain: b[36]&1 != 0, TermUnknown: b[36]&2 != 0}
		if valid == 0 || h.Seq > best.Seq {
			best = h
		}
		valid++
	}
	return best, valid
}
