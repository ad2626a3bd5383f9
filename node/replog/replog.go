// Package replog is a replicated log service on package raft: the smallest
// host that exercises everything the keeper will need from consensus —
// proposals from clients on any server (forwarded to the leader),
// acknowledgement when the entry is applied, and linearizable reads through
// ReadIndex. Its state machine is a hash chain over the applied entries, so
// two servers that applied the same prefix hold the same 8 bytes and a
// checker can compare them in O(1). It is test and benchmark scaffolding for
// the consensus layer, like package demo for the harness.
//
// Client protocol: frames (package frame) carrying
//
//	request:  type u8 | id u64 | payload          (propose=1, read=2)
//	response: type u8 | id u64 | index u64 | zxid u64 | hash u64   (ok=1)
//	          type u8 | id u64 | reason            (failed=2: retry, maybe elsewhere)
//
// A proposal's ok means the entry is committed and applied on the server
// that answers; a read's ok returns the applied index and hash at a point
// that includes every entry committed before the read arrived.
package replog

import (
	"encoding/binary"
	"fmt"

	"github.com/cespare/xxhash/v2"

	"herd/node/raft"
)

const (
	reqPropose = 1
	reqRead    = 2
	respOK     = 1
	respFailed = 2

	// MaxPayload bounds a proposal; MaxFrame a client frame.
	MaxPayload = 1 << 20
	MaxFrame   = MaxPayload + 64
)

// AppendPropose appends a proposal request frame to dst.
func AppendPropose(dst []byte, id uint64, payload []byte) []byte {
	return appendRequest(dst, reqPropose, id, payload)
}

// AppendRead appends a linearizable-read request frame to dst.
func AppendRead(dst []byte, id uint64) []byte { return appendRequest(dst, reqRead, id, nil) }

func appendRequest(dst []byte, typ byte, id uint64, payload []byte) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(9+len(payload)))
	dst = append(dst, typ)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return append(dst, payload...)
}

func appendOK(dst []byte, id uint64, index raft.Index, zxid raft.Zxid, hash uint64) []byte {
	dst = binary.BigEndian.AppendUint32(dst, 33)
	dst = append(dst, respOK)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = binary.BigEndian.AppendUint64(dst, uint64(index))
	dst = binary.BigEndian.AppendUint64(dst, uint64(zxid))
	return binary.BigEndian.AppendUint64(dst, hash)
}

func appendFailed(dst []byte, id uint64, reason string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(9+len(reason)))
	dst = append(dst, respFailed)
	dst = binary.BigEndian.AppendUint64(dst, id)
	return append(dst, reason...)
}

// Response is a decoded server answer.
type Response struct {
	OK     bool
	ID     uint64
	Index  raft.Index
	Zxid   raft.Zxid
	Hash   uint64
	Reason string
}

// ParseResponse decodes a response frame body.
func ParseResponse(body []byte) (Response, error) {
	if len(body) < 9 {
		return Response{}, fmt.Errorf("replog: short response")
	}
	r := Response{ID: binary.BigEndian.Uint64(body[1:9])}
	switch {
	case body[0] == respOK && len(body) == 33:
		r.OK = true
		r.Index = raft.Index(binary.BigEndian.Uint64(body[9:]))
		r.Zxid = raft.Zxid(binary.BigEndian.Uint64(body[17:]))
		r.Hash = binary.BigEndian.Uint64(body[25:])
	case body[0] == respFailed:
		r.Reason = string(body[9:])
	default:
		return Response{}, fmt.Errorf("replog: bad response type %d", body[0])
	}
	return r, nil
}

// Chain is the state machine: a hash chain over every applied entry.
type Chain struct {
	Index raft.Index
	Zxid  raft.Zxid
	Hash  uint64
	// OnApply, if set, sees every applied entry with the hash after it.
	OnApply func(e *raft.Entry, hash uint64)
	// ballast makes snapshots large enough to need several chunks, so
	// snapshot transfer is exercised with realistic sizes.
	ballast []byte
	scratch []byte
}

// ChainHash folds an entry into a chain hash. Every field that makes an
// entry what it is goes in: two servers with equal hashes at an index
// applied the same entries.
func ChainHash(prev uint64, e *raft.Entry, scratch []byte) (uint64, []byte) {
	b := binary.BigEndian.AppendUint64(scratch[:0], prev)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Index))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Term))
	b = binary.BigEndian.AppendUint64(b, uint64(e.Zxid))
	b = append(b, byte(e.Type))
	d := xxhash.New()
	d.Write(b)
	d.Write(e.Data)
	return d.Sum64(), b
}

func (c *Chain) Apply(e *raft.Entry) {
	if e.Index != c.Index+1 {
		panic(fmt.Sprintf("replog: applying entry %d after %d", e.Index, c.Index))
	}
	c.Hash, c.scratch = ChainHash(c.Hash, e, c.scratch)
	c.Index, c.Zxid = e.Index, e.Zxid
	if len(e.Data) > 0 {
		// Keep the last few payloads' worth of bytes as ballast.
		c.ballast = append(c.ballast, e.Data...)
		if len(c.ballast) > 96<<10 {
			c.ballast = append(c.ballast[:0], c.ballast[len(c.ballast)-(64<<10):]...)
		}
	}
	if c.OnApply != nil {
		c.OnApply(e, c.Hash)
	}
}

func (c *Chain) Snapshot() []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(c.Index))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Zxid))
	b = binary.BigEndian.AppendUint64(b, c.Hash)
	return append(b, c.ballast...)
}

func (c *Chain) Restore(data []byte, index raft.Index, zxid raft.Zxid) error {
	if len(data) < 24 {
		return fmt.Errorf("replog: snapshot of %d bytes", len(data))
	}
	i, z := raft.Index(binary.BigEndian.Uint64(data)), raft.Zxid(binary.BigEndian.Uint64(data[8:]))
	if i != index || z != zxid {
		return fmt.Errorf("replog: snapshot holds %d/%v, raft says %d/%v", i, z, index, zxid)
	}
	c.Index, c.Zxid, c.Hash = i, z, binary.BigEndian.Uint64(data[16:])
	c.ballast = append(c.ballast[:0], data[24:]...)
	return nil
}

// streamedChain is a Chain restored a piece at a time
// (raft.IncrementalRestore).
type streamedChain struct{ *Chain }

func (c streamedChain) BeginRestore(size int64) raft.SnapshotDecoder {
	return &chainDecoder{c: c.Chain, size: size}
}

// chainDecoder gathers the image's pieces and restores from them whole:
// the chain's image is small; what it exercises is raft's side.
type chainDecoder struct {
	c    *Chain
	size int64
	buf  []byte
}

func (d *chainDecoder) Write(p []byte) error {
	if int64(len(d.buf)+len(p)) > d.size {
		return fmt.Errorf("replog: snapshot longer than its %d bytes", d.size)
	}
	d.buf = append(d.buf, p...) // a copy: raft reuses p
	return nil
}

func (d *chainDecoder) Install(index raft.Index, zxid raft.Zxid) error {
	if int64(len(d.buf)) != d.size {
		return fmt.Errorf("replog: snapshot of %d bytes, %d expected", len(d.buf), d.size)
	}
	return d.c.Restore(d.buf, index, zxid)
}
