package sim

import (
	"encoding/binary"
	"testing"
	"time"

	"herd/node"
	"herd/node/frame"
	"herd/node/jute"
	"herd/node/keeper"
	"herd/sim/sched"
)

// keeperFuzzProbeXid marks the getData of "/" sent after the fuzzed request.
const keeperFuzzProbeXid = 424242

// FuzzKeeperRequest opens a session on a one-server keeper and sends one
// request frame the fuzzer chose (request header and body), then a getData of
// "/". Whatever the frame holds, the server must not panic or halt, and must
// answer the getData or close the connection: a bad request ends in an error
// reply or a closed connection, never a dead server or a hung one. Seeds are
// valid requests of most operations, which the fuzzer mutates.
func FuzzKeeperRequest(f *testing.F) {
	for _, r := range keeperFuzzSeeds() {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<16 {
			return
		}
		runKeeperFuzz(t, [][]byte{body})
	})
}

// FuzzKeeperRequests is FuzzKeeperRequest for a sequence of requests, so
// that one can act on what an earlier one did (a multi on a node a create
// made, watches then changes, auth then ACLs). The input is a series of
// frames, each a length byte and that many bytes of request.
func FuzzKeeperRequests(f *testing.F) {
	seeds := keeperFuzzSeeds()
	for i := range seeds {
		var in []byte
		for _, r := range [][]byte{seeds[i], seeds[(i+1)%len(seeds)], seeds[(i+7)%len(seeds)]} {
			if len(r) < 256 {
				in = append(append(in, byte(len(r))), r...)
			}
		}
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var frames [][]byte
		for len(in) > 0 && len(frames) < 16 {
			n := min(int(in[0]), len(in)-1)
			frames = append(frames, in[1:1+n])
			in = in[1+n:]
		}
		runKeeperFuzz(t, frames)
	})
}

// TestKeeperFuzzSeeds runs the seed corpus in every `go test`.
func TestKeeperFuzzSeeds(t *testing.T) {
	for _, r := range keeperFuzzSeeds() {
		runKeeperFuzz(t, [][]byte{r})
	}
}

func runKeeperFuzz(t *testing.T, frames [][]byte) {
	t.Helper()
	w := NewWorld(1, DefaultParams(FaultProfile{}))
	spec := keeper.ServerSpec{ID: 1, Host: "s1", QuorumPort: 2888, ElectionPort: 3888}
	cfg := keeper.Config{
		ID: 1, ClientAddr: "s1:2181", Servers: []keeper.ServerSpec{spec}, DataDir: "/data",
		TickTime: 200 * time.Millisecond, SyncLimit: 5, FourLetter: []string{"*"}, TTLEnabled: true,
		ContainerCheck: time.Second, RaftTick: 50 * time.Millisecond, ElectionTicks: 10, EnforceQuota: true,
	}
	server := w.AddNode(NodeSpec{Name: "s1", Listen: []string{spec.PeerAddr(), "s1:2181"}, Factory: keeper.New(cfg)})
	c := &fuzzClient{frames: frames}
	w.AddNode(NodeSpec{Name: "c1", Client: true, Factory: func(env node.Env) node.Machine {
		c.env = env
		return c
	}})
	w.runUntil(sched.Time(3 * time.Second))
	if f := w.Failure(); f != nil {
		t.Fatalf("requests %x: %v", frames, f)
	}
	if why := server.LastHalt(); why != "" {
		t.Fatalf("requests %x halted the server: %s", frames, why)
	}
	if c.badReply != "" {
		t.Fatalf("requests %x: the server answered with a bad frame: %s", frames, c.badReply)
	}
	if !c.handshake {
		t.Fatalf("requests %x: no session was established", frames)
	}
	if !c.answered && !c.closed {
		t.Fatalf("requests %x: the getData sent after them was neither answered nor refused with a closed connection", frames)
	}
}

// fuzzClient connects (retrying until the server leads), opens a session,
// sends the fuzzed frame and a getData of "/".
type fuzzClient struct {
	env       node.Env
	frames    [][]byte
	conn      node.ConnID
	in        *frame.Reader
	handshake bool
	answered  bool
	closed    bool
	badReply  string // the server sent a frame the client cannot read
}

func (c *fuzzClient) Step(ev node.Event) {
	switch ev.Kind {
	case node.EvStart:
		c.env.SetTimer("fuzz/dial", 100*time.Millisecond)
	case node.EvTimer:
		if !c.handshake {
			c.in = frame.NewReader(1 << 20)
			c.conn = c.env.Dial("s1:2181")
		}
	case node.EvConnected:
		if ev.Conn != c.conn {
			return
		}
		c.send(jute.Marshal(&jute.ConnectRequest{TimeOut: 10000, Passwd: make([]byte, 16)}))
	case node.EvClosed:
		if ev.Conn != c.conn {
			return
		}
		if c.handshake {
			c.closed = true
			return
		}
		c.env.SetTimer("fuzz/dial", 100*time.Millisecond) // not serving yet: retry
	case node.EvReceived:
		if ev.Conn != c.conn {
			return
		}
		c.in.Feed(ev.Data)
		for {
			frame, ok, err := c.in.Next()
			if err != nil {
				c.badReply = err.Error()
				c.env.Close(c.conn)
				return
			}
			if !ok {
				return
			}
			if !c.handshake {
				var resp jute.ConnectResponse
				if jute.Unmarshal(frame, &resp) != nil && len(frame) < 36 || resp.SessionID == 0 {
					c.env.Close(c.conn)
					c.env.SetTimer("fuzz/dial", 100*time.Millisecond)
					return
				}
				c.handshake = true
				for _, f := range c.frames {
					c.send(f)
				}
				probe := &jute.Encoder{}
				(&jute.RequestHeader{Xid: keeperFuzzProbeXid, Type: jute.OpGetData}).Encode(probe)
				(&jute.GetDataRequest{Path: "/"}).Encode(probe)
				c.send(probe.B)
				continue
			}
			if len(frame) >= 4 && int32(binary.BigEndian.Uint32(frame)) == keeperFuzzProbeXid {
				c.answered = true
			}
		}
	}
}

func (c *fuzzClient) send(body []byte) { c.env.Send(c.conn, frame.Append(nil, body)) }

// keeperFuzzSeeds are valid request frames (header and body) of most
// operations.
func keeperFuzzSeeds() [][]byte {
	open := []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}
	req := func(xid, op int32, r interface{ Encode(*jute.Encoder) }) []byte {
		e := &jute.Encoder{}
		(&jute.RequestHeader{Xid: xid, Type: op}).Encode(e)
		if r != nil {
			r.Encode(e)
		}
		return e.B
	}
	multi := func(op int32, ops []jute.MultiOp) []byte {
		e := &jute.Encoder{}
		(&jute.RequestHeader{Xid: 9, Type: op}).Encode(e)
		jute.EncodeMulti(e, ops)
		return e.B
	}
	create := &jute.CreateRequest{Path: "/a", Data: []byte("x"), ACL: open}
	return [][]byte{
		req(1, jute.OpCreate, create),
		req(1, jute.OpCreate2, &jute.CreateRequest{Path: "/s-", ACL: open, Flags: jute.ModePersistentSequential}),
		req(1, jute.OpCreate, &jute.CreateRequest{Path: "/e", ACL: open, Flags: jute.ModeEphemeral}),
		req(1, jute.OpCreateContainer, &jute.CreateRequest{Path: "/c", ACL: open, Flags: jute.ModeContainer}),
		req(1, jute.OpCreateTTL, &jute.CreateTTLRequest{Path: "/t", ACL: open, Flags: jute.ModePersistentWithTTL, TTL: 1000}),
		req(2, jute.OpDelete, &jute.DeleteRequest{Path: "/zookeeper", Version: -1}),
		req(3, jute.OpExists, &jute.ExistsRequest{Path: "/a", Watch: true}),
		req(4, jute.OpGetData, &jute.GetDataRequest{Path: "/zookeeper/config", Watch: true}),
		req(5, jute.OpSetData, &jute.SetDataRequest{Path: "/", Data: []byte("y"), Version: -1}),
		req(6, jute.OpGetACL, &jute.GetACLRequest{Path: "/"}),
		req(7, jute.OpSetACL, &jute.SetACLRequest{Path: "/", ACL: open, Version: -1}),
		req(8, jute.OpGetChildren2, &jute.GetChildrenRequest{Path: "/", Watch: true}),
		req(9, jute.OpSync, &jute.SyncRequest{Path: "/"}),
		req(10, jute.OpCheck, &jute.CheckVersionRequest{Path: "/", Version: 0}),
		req(11, jute.OpCheckWatches, &jute.CheckWatchesRequest{Path: "/", Type: 1}),
		req(12, jute.OpRemoveWatches, &jute.RemoveWatchesRequest{Path: "/", Type: 3}),
		req(13, jute.OpAddWatch, &jute.AddWatchRequest{Path: "/", Mode: 1}),
		req(14, jute.OpGetEphemerals, &jute.GetEphemeralsRequest{PrefixPath: "/"}),
		req(15, jute.OpGetAllChildrenNumber, &jute.GetAllChildrenNumberRequest{Path: "/"}),
		req(16, jute.OpWhoAmI, nil),
		req(jute.XidPing, jute.OpPing, nil),
		req(jute.XidAuth, jute.OpAuth, &jute.AuthPacket{Scheme: "digest", Auth: []byte("u:p")}),
		req(jute.XidSetWatches, jute.OpSetWatches, &jute.SetWatches{RelativeZxid: 0, DataWatches: []string{"/a"}, ExistWatches: []string{"/b"}, ChildWatches: []string{"/"}}),
		multi(jute.OpMulti, []jute.MultiOp{{Type: jute.OpCreate, Create: &jute.CreateTTLRequest{Path: "/m", ACL: open}}, {Type: jute.OpDelete, Delete: &jute.DeleteRequest{Path: "/m", Version: -1}}}),
		multi(jute.OpMultiRead, []jute.MultiOp{{Type: jute.OpGetData, GetData: &jute.GetDataRequest{Path: "/"}}, {Type: jute.OpGetChildren, GetChildren: &jute.GetChildrenRequest{Path: "/"}}}),
		// A quota on /a as zkCli sets one, with hard limits, then writes
		// under it (in FuzzKeeperRequests' sequences: seed i, i+1, i+7).
		req(18, jute.OpCreate, &jute.CreateRequest{Path: "/zookeeper/quota/a", ACL: open}),
		req(19, jute.OpCreate, &jute.CreateRequest{Path: "/zookeeper/quota/a/zookeeper_limits", Data: []byte("count=-1,bytes=-1=;byteHardLimit=4;countHardLimit=2"), ACL: open}),
		req(20, jute.OpCreate, &jute.CreateRequest{Path: "/zookeeper/quota/a/zookeeper_stats", Data: []byte("count=0,bytes=0"), ACL: open}),
		req(21, jute.OpSetData, &jute.SetDataRequest{Path: "/a", Data: []byte("12345"), Version: -1}),
		req(17, jute.OpCloseSession, nil),
	}
}
