// Package zkclient is a ZooKeeper client as a core: it speaks the jute
// protocol over an Env connection, so the simulator can run ZooKeeper
// workloads against keeper servers over netsim. It behaves like the Java and
// go-zookeeper clients where it matters to a server: one connection at a
// time, pipelined requests with replies expected in order, pings, reconnects
// to another server keeping the session (lastZxidSeen, setWatches), and a
// fresh session when the old one expired.
//
// It checks, as it goes, what a client can see of the server's promises and
// reports breaches through Config.OnViolation: replies in request order,
// zxids never going back on a session, every armed watch firing exactly
// once, and before any reply that reveals the change it announces.
package zkclient

import (
	"encoding/binary"
	"fmt"
	"time"

	"herd/node"
	"herd/node/frame"
	"herd/node/jute"
)

// Op is one operation the workload asks for.
type Op struct {
	Kind    OpKind
	Path    string
	Data    []byte
	Version int32
	Flags   int32
	Watch   bool
	Multi   []jute.MultiOp
}

// OpKind names operations.
type OpKind uint8

const (
	Create OpKind = iota + 1
	SetData
	Delete
	GetData
	Exists
	GetChildren
	Multi
	SyncRead // a sync, then a getData: a linearizable read
	Close    // close the session (a new one starts)
)

// Result is what came back.
type Result struct {
	Err      int32
	Zxid     int64
	Path     string
	Data     []byte
	Stat     jute.Stat
	Children []string
	Multi    []jute.MultiResult
	// Unknown: the connection died before the reply; a write may or may
	// not have been applied.
	Unknown bool
}

// Config configures a client.
type Config struct {
	Name           string
	Servers        []string
	SessionTimeout time.Duration
	// Next produces the workload's next operation, or false when done.
	Next func(r *node.Rand) (Op, bool)
	// MaxInflight bounds operations outstanding at once.
	MaxInflight int
	// Interval paces operations.
	Interval time.Duration
	// Invoke and Return record the history (the checkers use them);
	// id identifies an operation.
	Invoke func(id int, op Op)
	Return func(id int, op Op, r Result)
	// SessionChanged reports a new session (old is 0 at first).
	SessionChanged func(old, new int64)
	OnViolation    func(msg string)
	// Auth, if set, is sent as digest "user:password" after each connect.
	Auth string
}

const (
	timerPing    node.TimerName = "zk/ping"
	timerRead    node.TimerName = "zk/read-timeout"
	timerRetry   node.TimerName = "zk/reconnect"
	timerNext    node.TimerName = "zk/next"
	timerConnect node.TimerName = "zk/connect-timeout"
)

type pendingReq struct {
	xid     int32
	op      int32
	id      int // workload op id, or -1
	syncFor *Op // a SyncRead's sync: the getData follows
	work    Op
	watch   bool // a read that arms a watch
	path    string
}

type watch struct {
	armed  bool
	exists bool
	mzxid  int64 // what the read that armed it saw
}

// Client is the client core.
type Client struct {
	env node.Env
	cfg Config

	conn      node.ConnID
	in        *frame.Reader
	connected bool // handshake done
	session   int64
	passwd    []byte
	timeout   time.Duration
	lastZxid  int64
	xid       int32
	pending   []pendingReq
	opID      int
	inflight  int
	done      bool
	closing   bool // our own closeSession is in flight

	// watches armed on this session, by kind and path.
	dataWatches  map[string]*watch // exists and getData
	childWatches map[string]*watch
}

// New returns a Factory for clients.
func New(cfg Config) node.Factory {
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = 1
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 4 * time.Second
	}
	return func(env node.Env) node.Machine {
		return &Client{env: env, cfg: cfg, dataWatches: map[string]*watch{}, childWatches: map[string]*watch{}}
	}
}

// Done reports whether the workload finished.
func (c *Client) Done() bool { return c.done && c.inflight == 0 }

// Session is the current session id (0 if none).
func (c *Client) Session() int64 { return c.session }

// Step implements node.Machine.
func (c *Client) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		c.dial()
	case node.EvConnected:
		if ev.Conn == c.conn {
			c.handshake()
		}
	case node.EvReceived:
		if ev.Conn == c.conn {
			c.received(ev.Data)
		}
	case node.EvClosed:
		if ev.Conn == c.conn {
			c.lost()
		}
	case node.EvTimer:
		switch ev.Timer {
		case timerPing:
			if c.connected {
				c.send(jute.XidPing, jute.OpPing, nil, pendingReq{id: -1})
				c.env.SetTimer(timerPing, c.timeout/3)
			}
		case timerRead, timerConnect:
			if c.conn != 0 {
				c.env.Close(c.conn)
				c.lost()
			}
		case timerRetry:
			c.dial()
		case timerNext:
			c.fill()
		}
	}
}

func (c *Client) violation(format string, args ...any) {
	msg := c.cfg.Name + ": " + fmt.Sprintf(format, args...)
	if c.cfg.OnViolation != nil {
		c.cfg.OnViolation(msg)
	} else {
		c.env.Halt(msg)
	}
}

func (c *Client) dial() {
	if c.conn != 0 {
		return
	}
	c.conn = c.env.Dial(c.cfg.Servers[c.env.Rand().IntN(len(c.cfg.Servers))])
	c.in = frame.NewReader(1 << 21)
	c.connected = false
	c.xid = 0
	c.env.SetTimer(timerConnect, c.cfg.SessionTimeout)
}

func (c *Client) handshake() {
	req := jute.ConnectRequest{LastZxidSeen: c.lastZxid, TimeOut: int32(c.cfg.SessionTimeout / time.Millisecond),
		SessionID: c.session, Passwd: c.passwd, HasReadOnly: c.env.Rand().Chance(0.5)}
	if req.Passwd == nil {
		req.Passwd = make([]byte, 16)
	}
	c.env.Send(c.conn, frameOf(&req))
}

func frameOf(rec interface{ Encode(*jute.Encoder) }) []byte {
	e := &jute.Encoder{B: make([]byte, 4, 64)}
	rec.Encode(e)
	binary.BigEndian.PutUint32(e.B, uint32(len(e.B)-4))
	return e.B
}

// lost handles a dead connection: outstanding operations have unknown
// outcomes, and we reconnect (keeping the session, if it lives).
func (c *Client) lost() {
	c.conn = 0
	c.connected = false
	c.env.CancelTimer(timerPing)
	c.env.CancelTimer(timerRead)
	c.env.CancelTimer(timerConnect)
	for _, p := range c.pending {
		if p.id >= 0 && p.syncFor == nil {
			c.finish(p, Result{Unknown: true})
		}
	}
	c.pending = c.pending[:0]
	if c.closing {
		// Our closeSession may or may not have happened; either way the
		// session is over for us.
		c.closing = false
		c.newSession()
	}
	c.env.SetTimer(timerRetry, c.env.Rand().Between(10*time.Millisecond, 200*time.Millisecond))
}

func (c *Client) newSession() {
	old := c.session
	c.session, c.passwd = 0, nil
	clear(c.dataWatches)
	clear(c.childWatches)
	if c.cfg.SessionChanged != nil && old != 0 {
		c.cfg.SessionChanged(old, 0)
	}
}

func (c *Client) finish(p pendingReq, r Result) {
	c.inflight--
	if c.cfg.Return != nil {
		c.cfg.Return(p.id, p.work, r)
	}
}

func (c *Client) send(xid int32, op int32, body []byte, p pendingReq) {
	e := &jute.Encoder{B: make([]byte, 4, 16+len(body))}
	h := jute.RequestHeader{Xid: xid, Type: op}
	h.Encode(e)
	e.B = append(e.B, body...)
	binary.BigEndian.PutUint32(e.B, uint32(len(e.B)-4))
	c.env.Send(c.conn, e.B)
	p.xid, p.op = xid, op
	c.pending = append(c.pending, p)
	if len(c.pending) == 1 {
		c.env.SetTimer(timerRead, c.timeout*2/3)
	}
}

func (c *Client) nextXid() int32 {
	c.xid = c.xid%0x7fffffff + 1
	return c.xid
}

// ---- receiving ----

func (c *Client) received(data []byte) {
	c.in.Feed(data)
	for c.conn != 0 {
		body, ok, err := c.in.Next()
		if err != nil {
			c.violation("bad frame from the server: %v", err)
			c.env.Close(c.conn)
			c.lost()
			return
		}
		if !ok {
			return
		}
		if !c.connected {
			c.connectResponse(body)
			continue
		}
		c.reply(body)
	}
}

func (c *Client) connectResponse(body []byte) {
	var r jute.ConnectResponse
	d := jute.NewDecoder(body)
	r.Decode(d)
	if d.Err() != nil {
		c.violation("bad ConnectResponse: %v", d.Err())
		c.env.Close(c.conn)
		c.lost()
		return
	}
	c.env.CancelTimer(timerConnect)
	if r.TimeOut <= 0 || r.SessionID == 0 {
		// Expired (or never known): start over with a new session.
		c.newSession()
		c.env.Close(c.conn)
		c.lost()
		return
	}
	if c.session != 0 && r.SessionID != c.session {
		c.violation("reconnected with session 0x%x but the server answered 0x%x", c.session, r.SessionID)
	}
	if len(r.Passwd) != 16 {
		c.violation("session password of %d bytes (clients expect 16)", len(r.Passwd))
	}
	if c.session == 0 && c.cfg.SessionChanged != nil {
		c.cfg.SessionChanged(0, r.SessionID)
	}
	c.session, c.passwd = r.SessionID, r.Passwd
	c.timeout = time.Duration(r.TimeOut) * time.Millisecond
	c.connected = true
	c.env.SetTimer(timerPing, c.timeout/3)
	if c.cfg.Auth != "" {
		c.send(jute.XidAuth, jute.OpAuth, jute.Marshal(&jute.AuthPacket{Scheme: "digest", Auth: []byte(c.cfg.Auth)}), pendingReq{id: -1})
	}
	c.resendWatches()
	c.fill()
}

// resendWatches re-registers armed watches on the new connection.
func (c *Client) resendWatches() {
	var sw jute.SetWatches
	sw.RelativeZxid = c.lastZxid
	for _, p := range sortedKeys(c.dataWatches) {
		w := c.dataWatches[p]
		if w.exists {
			sw.DataWatches = append(sw.DataWatches, p)
		} else {
			sw.ExistWatches = append(sw.ExistWatches, p)
		}
	}
	sw.ChildWatches = sortedKeys(c.childWatches)
	if len(sw.DataWatches)+len(sw.ExistWatches)+len(sw.ChildWatches) == 0 {
		return
	}
	c.send(jute.XidSetWatches, jute.OpSetWatches, jute.Marshal(&sw), pendingReq{id: -1})
}

func (c *Client) reply(body []byte) {
	var h jute.ReplyHeader
	d := jute.NewDecoder(body)
	h.Decode(d)
	if d.Err() != nil {
		c.violation("short reply")
		return
	}
	rest := body[16:]
	if h.Xid == jute.XidNotification {
		var ev jute.WatcherEvent
		if jute.Unmarshal(rest, &ev) != nil {
			c.violation("bad notification")
			return
		}
		c.notification(ev)
		return
	}
	if len(c.pending) == 0 {
		c.violation("reply xid %d with nothing outstanding", h.Xid)
		return
	}
	p := c.pending[0]
	if h.Xid != p.xid {
		c.violation("reply for xid %d, expected xid %d: replies out of request order", h.Xid, p.xid)
		c.env.Close(c.conn)
		c.lost()
		return
	}
	c.pending = c.pending[1:]
	if len(c.pending) == 0 {
		c.env.CancelTimer(timerRead)
	} else {
		c.env.SetTimer(timerRead, c.timeout*2/3)
	}
	if h.Zxid >= 0 && p.op != jute.OpAuth {
		if h.Zxid < c.lastZxid {
			c.violation("reply zxid 0x%x after 0x%x: the session saw time go back", h.Zxid, c.lastZxid)
		}
		c.lastZxid = max(c.lastZxid, h.Zxid)
	}
	if p.id < 0 {
		if p.op == jute.OpAuth && h.Err != jute.ErrOK {
			c.violation("auth failed: %s", jute.ErrName(h.Err))
		}
		return
	}
	r := Result{Err: h.Err, Zxid: h.Zxid}
	if h.Err == jute.ErrOK {
		c.decodeResult(p, rest, &r)
	}
	c.checkRevealed(p, &r)
	if p.syncFor != nil {
		return // the getData after it carries the operation
	}
	if p.work.Kind == Close {
		c.finish(p, r)
		c.closing = false
		c.newSession()
		c.env.Close(c.conn)
		c.lost()
		return
	}
	c.finish(p, r)
	c.fill()
}

func (c *Client) decodeResult(p pendingReq, rest []byte, r *Result) {
	var err error
	switch p.op {
	case jute.OpCreate:
		var resp jute.CreateResponse
		err = jute.Unmarshal(rest, &resp)
		r.Path = resp.Path
	case jute.OpCreate2:
		var resp jute.Create2Response
		err = jute.Unmarshal(rest, &resp)
		r.Path, r.Stat = resp.Path, resp.Stat
	case jute.OpSetData, jute.OpExists:
		err = jute.Unmarshal(rest, &r.Stat)
	case jute.OpGetData:
		var resp jute.GetDataResponse
		err = jute.Unmarshal(rest, &resp)
		r.Data, r.Stat = resp.Data, resp.Stat
	case jute.OpGetChildren2:
		var resp jute.GetChildren2Response
		err = jute.Unmarshal(rest, &resp)
		r.Children, r.Stat = resp.Children, resp.Stat
	case jute.OpMulti:
		d := jute.NewDecoder(rest)
		r.Multi, err = jute.DecodeMultiResponse(d)
	}
	if err != nil {
		c.violation("cannot decode the %d reply: %v", p.op, err)
	}
}

// ---- watches ----

func (c *Client) notification(ev jute.WatcherEvent) {
	var set map[string]*watch
	switch ev.Type {
	case jute.EventNodeCreated, jute.EventNodeDataChanged:
		set = c.dataWatches
	case jute.EventNodeChildrenChanged:
		set = c.childWatches
	case jute.EventNodeDeleted:
		_, inData := c.dataWatches[ev.Path]
		_, inChild := c.childWatches[ev.Path]
		if !inData && !inChild {
			c.violation("NodeDeleted for %s, which has no armed watch (a duplicate or a stray event)", ev.Path)
			return
		}
		delete(c.dataWatches, ev.Path)
		delete(c.childWatches, ev.Path)
		return
	default:
		c.violation("event type %d for %s", ev.Type, ev.Path)
		return
	}
	if _, ok := set[ev.Path]; !ok {
		c.violation("event %d for %s, which has no armed watch (a duplicate or a stray event)", ev.Type, ev.Path)
		return
	}
	delete(set, ev.Path)
}

// checkRevealed arms watches set by a read, and checks that no reply shows a
// watched node changed before its notification came.
func (c *Client) checkRevealed(p pendingReq, r *Result) {
	if p.path == "" {
		return
	}
	var stat *jute.Stat
	exists := r.Err == jute.ErrOK
	switch p.op {
	case jute.OpGetData, jute.OpExists, jute.OpSetData, jute.OpCreate2:
		if exists {
			stat = &r.Stat
		}
	default:
		return
	}
	if r.Err != jute.ErrOK && r.Err != jute.ErrNoNode {
		return
	}
	if w, ok := c.dataWatches[p.path]; ok {
		changed := w.exists != exists || (stat != nil && stat.Mzxid != w.mzxid)
		if changed {
			c.violation("%s: a reply shows the node changed (exists %v, mzxid 0x%x → exists %v) before the watch fired",
				p.path, w.exists, w.mzxid, exists)
			delete(c.dataWatches, p.path)
		}
	}
	if p.watch && (exists || p.op == jute.OpExists) {
		w := &watch{armed: true, exists: exists}
		if stat != nil {
			w.mzxid = stat.Mzxid
		}
		c.dataWatches[p.path] = w
	}
}

// ---- workload ----

func (c *Client) fill() {
	for c.connected && !c.done && !c.closing && c.inflight < c.cfg.MaxInflight {
		op, ok := c.cfg.Next(c.env.Rand())
		if !ok {
			c.done = true
			return
		}
		c.opID++
		c.inflight++
		if c.cfg.Invoke != nil {
			c.cfg.Invoke(c.opID, op)
		}
		c.issue(c.opID, op)
		if c.cfg.Interval > 0 {
			c.env.SetTimer(timerNext, c.cfg.Interval)
			return
		}
	}
}

func (c *Client) issue(id int, op Op) {
	p := pendingReq{id: id, work: op, path: op.Path, watch: op.Watch}
	switch op.Kind {
	case Create:
		c.send(c.nextXid(), jute.OpCreate2, jute.Marshal(&jute.CreateRequest{Path: op.Path, Data: op.Data,
			ACL: []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}, Flags: op.Flags}), p)
	case SetData:
		c.send(c.nextXid(), jute.OpSetData, jute.Marshal(&jute.SetDataRequest{Path: op.Path, Data: op.Data, Version: op.Version}), p)
	case Delete:
		c.send(c.nextXid(), jute.OpDelete, jute.Marshal(&jute.DeleteRequest{Path: op.Path, Version: op.Version}), p)
	case GetData:
		c.send(c.nextXid(), jute.OpGetData, jute.Marshal(&jute.GetDataRequest{Path: op.Path, Watch: op.Watch}), p)
	case Exists:
		c.send(c.nextXid(), jute.OpExists, jute.Marshal(&jute.ExistsRequest{Path: op.Path, Watch: op.Watch}), p)
	case GetChildren:
		c.send(c.nextXid(), jute.OpGetChildren2, jute.Marshal(&jute.GetChildrenRequest{Path: op.Path}), p)
	case Multi:
		e := &jute.Encoder{}
		jute.EncodeMulti(e, op.Multi)
		c.send(c.nextXid(), jute.OpMulti, e.B, p)
	case SyncRead:
		opCopy := op
		c.send(c.nextXid(), jute.OpSync, jute.Marshal(&jute.SyncRequest{Path: op.Path}), pendingReq{id: id, syncFor: &opCopy})
		c.send(c.nextXid(), jute.OpGetData, jute.Marshal(&jute.GetDataRequest{Path: op.Path, Watch: op.Watch}), p)
	case Close:
		c.closing = true
		c.send(c.nextXid(), jute.OpCloseSession, nil, p)
	}
}

func sortedKeys(m map[string]*watch) []string {
	out := make([]string, 0, len(m))
	for k := range m { // order-independent: sorted below
		out = append(out, k)
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j] < out[j-1]; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}
