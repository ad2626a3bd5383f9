package compat

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// Wire-level checks of details that kazoo, zkCli and go-zookeeper tolerate
// but other clients (the C client, Java's xid check) do not: handshake
// sizes, reply order and framing, special xids, session takeover.

const (
	opCreate      = 1
	opExists      = 3
	opGetData     = 4
	opSetData     = 5
	opPing        = 11
	opAuth        = 100
	opCloseSess   = -11
	xidPing       = -2
	xidAuth       = -4
	xidWatchEvent = -1
)

type jw struct{ bytes.Buffer }

func (w *jw) i32(v int32) *jw { binary.Write(&w.Buffer, binary.BigEndian, v); return w }
func (w *jw) i64(v int64) *jw { binary.Write(&w.Buffer, binary.BigEndian, v); return w }
func (w *jw) bool(v bool) *jw {
	b := byte(0)
	if v {
		b = 1
	}
	w.WriteByte(b)
	return w
}
func (w *jw) str(s string) *jw { w.i32(int32(len(s))); w.WriteString(s); return w }
func (w *jw) buf(b []byte) *jw {
	if b == nil {
		return w.i32(-1)
	}
	w.i32(int32(len(b)))
	w.Write(b)
	return w
}

// worldACL writes a vector<ACL> with world:anyone ALL.
func (w *jw) worldACL() *jw { return w.i32(1).i32(31).str("world").str("anyone") }

type jr struct {
	b   []byte
	err error
}

func (r *jr) take(n int) []byte {
	if r.err != nil || len(r.b) < n {
		r.err = io.ErrUnexpectedEOF
		return make([]byte, n)
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *jr) i32() int32 { return int32(binary.BigEndian.Uint32(r.take(4))) }
func (r *jr) i64() int64 { return int64(binary.BigEndian.Uint64(r.take(8))) }
func (r *jr) str() string {
	n := r.i32()
	if n < 0 {
		return ""
	}
	return string(r.take(int(n)))
}

type rawConn struct {
	t *testing.T
	c net.Conn
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{t: t, c: c}
}

func (r *rawConn) send(parts ...[]byte) {
	r.t.Helper()
	var out bytes.Buffer
	for _, p := range parts {
		binary.Write(&out, binary.BigEndian, int32(len(p)))
		out.Write(p)
	}
	r.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.c.Write(out.Bytes()); err != nil {
		r.t.Fatalf("write: %v", err)
	}
}

// recv reads one length-prefixed packet; io.EOF when the server closed.
func (r *rawConn) recv() ([]byte, error) {
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var n int32
	if err := binary.Read(r.c, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	if n < 0 || n > 1<<20 {
		return nil, errors.New("bad packet length")
	}
	b := make([]byte, n)
	_, err := io.ReadFull(r.c, b)
	return b, err
}

func (r *rawConn) mustRecv(what string) []byte {
	r.t.Helper()
	b, err := r.recv()
	if err != nil {
		r.t.Fatalf("%s: %v", what, err)
	}
	return b
}

// expectClosed checks the server closes the connection without sending
// anything more.
func (r *rawConn) expectClosed(what string) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	b := make([]byte, 1)
	n, err := r.c.Read(b)
	if n != 0 || err == nil {
		r.t.Fatalf("%s: got %d bytes (%v), want the server to close the connection", what, n, err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatalf("%s: connection still open after 10s", what)
	}
}

type connectReply struct {
	proto, timeout int32
	sid            int64
	passwd         []byte
	size           int
	ro             int // -1 absent
}

func connectReq(lastZxid int64, timeout int32, sid int64, passwd []byte, withRO bool) []byte {
	w := (&jw{}).i32(0).i64(lastZxid).i32(timeout).i64(sid).buf(passwd)
	if withRO {
		w.bool(false)
	}
	return w.Bytes()
}

func (r *rawConn) handshake(lastZxid int64, timeout int32, sid int64, passwd []byte, withRO bool) connectReply {
	r.t.Helper()
	r.send(connectReq(lastZxid, timeout, sid, passwd, withRO))
	b := r.mustRecv("connect response")
	rd := &jr{b: b}
	cr := connectReply{proto: rd.i32(), timeout: rd.i32(), sid: rd.i64(), size: len(b), ro: -1}
	n := rd.i32()
	cr.passwd = rd.take(int(max(n, 0)))
	if len(rd.b) == 1 {
		cr.ro = int(rd.b[0])
	} else if len(rd.b) != 0 {
		r.t.Fatalf("connect response has %d trailing bytes", len(rd.b))
	}
	if rd.err != nil {
		r.t.Fatalf("short connect response (%d bytes)", len(b))
	}
	return cr
}

type reply struct {
	xid  int32
	zxid int64
	err  int32
	body []byte
}

func (r *rawConn) reply(what string) reply {
	r.t.Helper()
	b := r.mustRecv(what)
	if len(b) < 16 {
		r.t.Fatalf("%s: %d-byte reply", what, len(b))
	}
	rd := &jr{b: b}
	return reply{xid: rd.i32(), zxid: rd.i64(), err: rd.i32(), body: rd.b}
}

func req(xid, op int32) *jw { return (&jw{}).i32(xid).i32(op) }

func TestWire(t *testing.T) {
	e := startEnsemble(t, nil)
	addr := e.Addrs[0]
	base := uniquePath("wire")

	t.Run("handshake", func(t *testing.T) {
		// with the read-only byte (Java, C, kazoo): 37-byte body ending in it
		r := dialRaw(t, addr)
		cr := r.handshake(0, 10000, 0, make([]byte, 16), true)
		if cr.size != 37 || cr.proto != 0 || cr.timeout != 10000 || cr.sid == 0 || len(cr.passwd) != 16 || cr.ro != 0 {
			t.Fatalf("connect response with RO byte: %+v, want 37 bytes, timeout 10000, 16-byte passwd, ro 0", cr)
		}
		// without it (go-zookeeper): 36 bytes, no RO byte
		r2 := dialRaw(t, addr)
		cr2 := r2.handshake(0, 10000, 0, make([]byte, 16), false)
		if cr2.size != 36 || cr2.ro != -1 || cr2.sid == 0 || cr2.sid == cr.sid || len(cr2.passwd) != 16 {
			t.Fatalf("connect response without RO byte: %+v, want 36 bytes", cr2)
		}
		// timeouts are clamped to [2, 20] ticks
		r3 := dialRaw(t, addr)
		if cr := r3.handshake(0, 100, 0, make([]byte, 16), true); cr.timeout != 4000 {
			t.Fatalf("negotiated timeout for 100 ms: %d, want 4000", cr.timeout)
		}
		r4 := dialRaw(t, addr)
		if cr := r4.handshake(0, 1000000, 0, make([]byte, 16), true); cr.timeout != 40000 {
			t.Fatalf("negotiated timeout for 1e6 ms: %d, want 40000", cr.timeout)
		}
		// closeSession: a header-only reply, then the server closes
		for i, rc := range []*rawConn{r, r2, r3, r4} {
			rc.send(req(1, opCloseSess).Bytes())
			if rp := rc.reply("closeSession"); rp.xid != 1 || rp.err != 0 || len(rp.body) != 0 {
				t.Fatalf("closeSession reply %d: %+v", i, rp)
			}
			rc.expectClosed("after closeSession")
		}
	})

	t.Run("pipeline", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.handshake(0, 10000, 0, make([]byte, 16), true)
		// ping with the special xid
		r.send(req(xidPing, opPing).Bytes())
		if rp := r.reply("ping"); rp.xid != xidPing || rp.err != 0 || len(rp.body) != 0 {
			t.Fatalf("ping reply %+v", rp)
		}
		// the base node
		r.send(req(1, opCreate).str(base).buf([]byte("b")).worldACL().i32(0).Bytes())
		rp := r.reply("create base")
		if rp.xid != 1 || rp.err != 0 {
			t.Fatalf("create base: %+v", rp)
		}
		if p := (&jr{b: rp.body}).str(); p != base {
			t.Fatalf("create returned %q", p)
		}
		createZxid := rp.zxid
		// a read's reply carries the server's last zxid
		r.send(req(2, opExists).str(base).bool(false).Bytes())
		rp = r.reply("exists base")
		if rp.xid != 2 || rp.err != 0 || len(rp.body) != 68 || rp.zxid != createZxid {
			t.Fatalf("exists base: xid %d err %d body %d zxid %#x, want 68-byte Stat and zxid %#x", rp.xid, rp.err, len(rp.body), rp.zxid, createZxid)
		}
		if czxid := (&jr{b: rp.body}).i64(); czxid != createZxid {
			t.Fatalf("czxid %#x, create reply zxid %#x", czxid, createZxid)
		}
		// many requests in one write: replies in request order, errors
		// without a body
		var parts [][]byte
		type want struct {
			xid, err int32
			body     int // -1: any non-empty
		}
		var wants []want
		xid := int32(10)
		for i := 0; i < 30; i++ {
			p := base + "/n" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			parts = append(parts, req(xid, opCreate).str(p).buf([]byte{byte(i)}).worldACL().i32(0).Bytes())
			wants = append(wants, want{xid, 0, 4 + len(p)})
			xid++
			parts = append(parts, req(xid, opExists).str(p+"/missing").bool(false).Bytes())
			wants = append(wants, want{xid, -101, 0})
			xid++
			parts = append(parts, req(xid, opGetData).str(p).bool(false).Bytes())
			wants = append(wants, want{xid, 0, 4 + 1 + 68})
			xid++
			parts = append(parts, req(xid, opSetData).str(p).buf([]byte("xy")).i32(5).Bytes())
			wants = append(wants, want{xid, -103, 0})
			xid++
		}
		r.send(parts...)
		last := createZxid
		for i, w := range wants {
			rp := r.reply("pipelined reply")
			if rp.xid != w.xid {
				t.Fatalf("reply %d has xid %d, want %d: replies must follow request order", i, rp.xid, w.xid)
			}
			if rp.err != w.err || len(rp.body) != w.body {
				t.Fatalf("reply xid %d: err %d, %d-byte body; want err %d, %d bytes", rp.xid, rp.err, len(rp.body), w.err, w.body)
			}
			if rp.zxid < last {
				t.Fatalf("reply xid %d: zxid went back from %#x to %#x", rp.xid, last, rp.zxid)
			}
			last = rp.zxid
		}
		// a watch event precedes the reply that reveals the change
		p := base + "/naa"
		r.send(req(200, opGetData).str(p).bool(true).Bytes())
		if rp := r.reply("getData with watch"); rp.xid != 200 || rp.err != 0 {
			t.Fatalf("getData with watch: %+v", rp)
		}
		r.send(req(201, opSetData).str(p).buf([]byte("new")).i32(-1).Bytes())
		ev := r.reply("watch event")
		rd := &jr{b: ev.body}
		if typ, state, path := rd.i32(), rd.i32(), rd.str(); ev.xid != xidWatchEvent || ev.zxid != -1 || ev.err != 0 ||
			typ != 3 || state != 3 || path != p {
			t.Fatalf("first packet after setData: xid %d zxid %d err %d event (%d,%d,%q); want the NodeDataChanged(3) notification, state 3, xid -1, zxid -1",
				ev.xid, ev.zxid, ev.err, typ, state, path)
		}
		if rp := r.reply("setData"); rp.xid != 201 || rp.err != 0 || len(rp.body) != 68 {
			t.Fatalf("setData after the event: %+v", rp)
		}
		r.send(req(202, opCloseSess).Bytes())
		r.reply("close")
	})

	t.Run("auth", func(t *testing.T) {
		r := dialRaw(t, addr)
		r.handshake(0, 10000, 0, make([]byte, 16), true)
		r.send(req(xidAuth, opAuth).i32(0).str("digest").buf([]byte("alice:secret")).Bytes())
		if rp := r.reply("digest auth"); rp.xid != xidAuth || rp.err != 0 || len(rp.body) != 0 {
			t.Fatalf("digest auth reply %+v", rp)
		}
		r.send(req(xidAuth, opAuth).i32(0).str("nosuchscheme").buf([]byte("x")).Bytes())
		if rp := r.reply("unknown auth scheme"); rp.xid != xidAuth || rp.err != -115 {
			t.Fatalf("unknown auth scheme reply %+v, want err -115 (AuthFailed)", rp)
		}
		r.expectClosed("after a failed auth")
	})

	t.Run("session_takeover", func(t *testing.T) {
		a := dialRaw(t, addr)
		cr := a.handshake(0, 10000, 0, make([]byte, 16), true)
		// a wrong password: an "expired" answer, and the live connection
		// of that session is closed too
		b := dialRaw(t, addr)
		bad := bytes.Repeat([]byte{0xAB}, 16)
		got := b.handshake(0, 10000, cr.sid, bad, true)
		if got.timeout != 0 || got.sid != 0 || !bytes.Equal(got.passwd, make([]byte, 16)) || got.size != 37 {
			t.Fatalf("reconnect with a wrong password: %+v, want timeout 0, session 0, zero passwd", got)
		}
		b.expectClosed("after the invalid-session answer")
		a.expectClosed("the old connection of a session someone reconnected to")
		// the session itself is still valid with the right password
		c := dialRaw(t, addr)
		got = c.handshake(0, 10000, cr.sid, cr.passwd, true)
		if got.sid != cr.sid || got.timeout != 10000 || !bytes.Equal(got.passwd, cr.passwd) {
			t.Fatalf("reconnect with the right password: %+v, want session %#x", got, cr.sid)
		}
		// which in turn takes over from c
		d := dialRaw(t, addr)
		got = d.handshake(0, 10000, cr.sid, cr.passwd, false)
		if got.sid != cr.sid || got.size != 36 {
			t.Fatalf("second reconnect: %+v", got)
		}
		c.expectClosed("the connection a reconnect took over from")
		d.send(req(1, opCloseSess).Bytes())
		d.reply("close")
		// a closed session cannot be resumed
		f := dialRaw(t, addr)
		got = f.handshake(0, 10000, cr.sid, cr.passwd, true)
		if got.timeout != 0 || got.sid != 0 {
			t.Fatalf("reconnect to a closed session: %+v, want timeout 0, session 0", got)
		}
		f.expectClosed("after the invalid-session answer")
	})

	t.Run("zxid_ahead", func(t *testing.T) {
		// a client that has seen a newer zxid than the server must go
		// elsewhere: the server closes without answering
		r := dialRaw(t, addr)
		r.send(connectReq(0x7fff_0000_0000_0000, 10000, 0, make([]byte, 16), true))
		r.expectClosed("connect with lastZxidSeen ahead of the server")
	})
}
