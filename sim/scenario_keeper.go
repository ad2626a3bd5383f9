package sim

import (
	"fmt"
	"slices"
	"time"

	"herd/checker"
	"herd/node"
	"herd/node/jute"
	"herd/node/keeper"
	"herd/node/raft"
	"herd/node/zkclient"
)

// The keeper scenario runs the ZooKeeper-compatible keeper on 3 or 5
// servers with ZooKeeper clients (package zkclient, speaking jute over
// netsim) under every fault. Checked: linearizability of every write and of
// every read that follows a sync (Porcupine, per znode); replies in request
// order and zxids never going back on a session; every armed watch firing
// exactly once and before any reply that reveals the change (in the
// clients); the data tree's structure on every server, twice a second; and
// ephemerals existing exactly while their session lives.

var keeperBugs = map[string]string{
	keeper.BugStaleSync:      "sync is answered at once: a read after sync can miss writes committed before it",
	keeper.BugLateWatch:      "watch events go out at the next tick: a reply can reveal a change before its event",
	keeper.BugKeepEphemerals: "a closed or expired session leaves its ephemerals behind",
	keeper.BugServeBehind:    "a server behind a client serves it anyway: the client sees zxids go back",
	keeper.BugDoubleWatch:    "one-shot watches are not removed when they fire: events arrive twice",
	keeper.BugFuzzySnapshot:  "setData keeps no image for a snapshot being encoded: the snapshot holds later data",
	keeper.BugQuotaForgotten: "a tree restored from a snapshot forgets which paths are under quota",
	keeper.BugQuotaMulti:     "changes made inside a multi are not counted in quota stats",
	keeper.BugStuckConnect:   "a handshake whose session creation or read point was lost is never answered nor closed",
	raft.BugNoDemandSnapshot: "a leader whose in-memory log no longer holds what a follower needs waits for the next periodic snapshot: the follower may never catch up",
}

func init() {
	Register(&Scenario{
		Name:    "keeper",
		Doc:     "the ZooKeeper-compatible keeper on 3 or 5 servers, ZooKeeper clients over jute, every fault; Porcupine, watch, session and ephemeral checks",
		Profile: keeperFaults,
		Bugs:    keeperBugs,
		Build:   buildKeeper,
	})
}

// keeperFaults is every fault, clients included: a client that crashes,
// is killed or stops leaves its session to expire at the servers, with its
// ephemerals and its watches, and its requests in flight to be applied or
// not.
var keeperFaults = func() FaultProfile { p := AllFaults; p.Clients = true; return p }()

var keeperKeys = []string{"/k/0", "/k/1", "/k/2", "/k/3"}

// keeperSetup is created, in order, before the workload starts: the keys'
// and ephemerals' parents, and a quota on each as zkCli's setquota makes one
// (soft limits, so no write fails for it), whose stats every server must
// keep equal to a count of the subtree through every fault.
var keeperSetup = []zkclient.Op{
	{Kind: zkclient.Create, Path: "/k", Version: -1},
	{Kind: zkclient.Create, Path: "/e", Version: -1},
	{Kind: zkclient.Create, Path: "/zookeeper/quota/k", Version: -1},
	{Kind: zkclient.Create, Path: "/zookeeper/quota/k/zookeeper_limits", Data: []byte("count=3,bytes=-1"), Version: -1},
	{Kind: zkclient.Create, Path: "/zookeeper/quota/k/zookeeper_stats", Data: []byte("count=0,bytes=0"), Version: -1},
	{Kind: zkclient.Create, Path: "/zookeeper/quota/e", Version: -1},
	{Kind: zkclient.Create, Path: "/zookeeper/quota/e/zookeeper_limits", Data: []byte("count=-1,bytes=10"), Version: -1},
	{Kind: zkclient.Create, Path: "/zookeeper/quota/e/zookeeper_stats", Data: []byte("count=0,bytes=0"), Version: -1},
}

var keeperQuotas = []string{"/k", "/e"}

type keeperChecks struct {
	w       *World
	servers []*Node
	clients []*Node
	gate    *raftGate

	ops      map[[2]int]*checker.ZKOp // (client, op id) -> the operation being recorded
	history  []checker.ZKOp
	ended    map[int64]bool            // sessions a client saw end
	live     map[int64]map[string]bool // session -> its ephemerals a client created and did not delete
	sessions []int64                   // per client: current session
}

// keeperTickTime is the simulated servers' tickTime.
const keeperTickTime = 200 * time.Millisecond

func buildKeeper(w *World) Checks {
	r := stream(w.Seed, "keeper", 0)
	nServers := 3
	if r.Chance(0.4) {
		nServers = 5
	}
	kc := &keeperChecks{w: w, ops: map[[2]int]*checker.ZKOp{}, ended: map[int64]bool{}, live: map[int64]map[string]bool{}}
	var specs []keeper.ServerSpec
	var clientAddrs []string
	for i := range nServers {
		specs = append(specs, keeper.ServerSpec{ID: raft.ID(i + 1), Host: fmt.Sprintf("s%d", i+1), QuorumPort: 2888, ElectionPort: 3888})
		clientAddrs = append(clientAddrs, fmt.Sprintf("s%d:2181", i+1))
	}
	walFill := drawWALFill(w.Seed)
	// Syncs of a snapshot file part-way through its encoding: every few
	// pieces, or (the default) never at this tree size.
	snapSync := []int{512, 4 << 10, 0}[stream(w.Seed, "snapsync", 0).IntN(3)]
	for i := range nServers {
		i := i
		cfg := keeper.Config{
			ID: raft.ID(i + 1), ClientAddr: clientAddrs[i], Servers: specs, DataDir: "/data",
			TickTime: keeperTickTime, SyncLimit: 5, FourLetter: []string{"*"}, TTLEnabled: true,
			ContainerCheck: time.Second, RaftTick: 50 * time.Millisecond, ElectionTicks: 10, SnapshotEvery: 200, SnapshotStep: 1 + r.IntN(40),
			WALFill: walFill, SnapshotSyncBytes: snapSync, LogChunk: drawLogChunk(w.Seed), LogKeep: drawLogKeep(w.Seed), SnapshotLogRatio: keeperLogRatio(drawSnapshotLogRatio(w.Seed)), TrimBytes: drawTrimBytes(w.Seed), RestoreReadBytes: drawRestoreRead(w.Seed), SnapshotChunk: drawSnapshotChunk(w.Seed), NoAppendCoalescing: drawNoCoalescing(w.Seed), NoPeerAcks: drawNoPeerAcks(w.Seed), Bug: w.Bug,
		}
		name := fmt.Sprintf("s%d", i+1)
		cfg.SnapshotCheck = func(err error) { w.Fail(FailCorrectness, "snapshot", "%s: %v", name, err) }
		factory := func(env node.Env) node.Machine {
			c := cfg
			c.Rejoin = kc.gate.rejoin(i)
			return keeper.New(c)(env)
		}
		kc.servers = append(kc.servers, w.AddNode(NodeSpec{Name: fmt.Sprintf("s%d", i+1), Listen: []string{specs[i].PeerAddr(), clientAddrs[i]}, Factory: factory}))
	}
	kc.gate = newRaftGate(kc.servers, func(i int) *raft.Raft {
		if s := kc.server(i); s != nil {
			return s.Raft()
		}
		return nil
	})
	const nClients = 4
	kc.sessions = make([]int64, nClients)
	for ci := range nClients {
		ci := ci
		name := fmt.Sprintf("c%d", ci+1)
		wl := &keeperWorkload{client: ci, ops: 120, parents: map[string]bool{}}
		cfg := zkclient.Config{
			Name: name, Servers: clientAddrs, SessionTimeout: 2 * time.Second, MaxInflight: 2,
			Interval: 30 * time.Millisecond, Next: wl.next,
			Invoke:         func(id int, op zkclient.Op) { kc.invoke(ci, id, op) },
			Return:         func(id int, op zkclient.Op, res zkclient.Result) { kc.returned(ci, id, op, res, wl) },
			SessionChanged: func(old, new int64) { kc.sessionChanged(ci, old, new, wl) },
			OnViolation:    func(msg string) { w.Fail(FailCorrectness, "zk-client", "%s", msg) },
		}
		kc.clients = append(kc.clients, w.AddNode(NodeSpec{Name: name, Factory: zkclient.New(cfg), Client: true,
			OnDown: func() { kc.clientDown(ci, wl) }}))
	}
	w.Q.After(500*time.Millisecond, funcHandler(kc.periodic), 0)
	return kc
}

func (kc *keeperChecks) server(i int) *keeper.Server {
	s, _ := kc.servers[i].Machine().(*keeper.Server)
	return s
}

// ---- the workload ----

type keeperWorkload struct {
	client     int
	ops, done  int
	seq        int
	ephemerals []string // this session's, for deletes
	// keeperSetup must exist before the workload starts (the model knows
	// no parents); each create is repeated until an answer says it exists.
	parents map[string]bool
	asked   bool // a parent create is in flight
}

func (wl *keeperWorkload) next(r *node.Rand) (zkclient.Op, bool) {
	for _, op := range keeperSetup {
		if !wl.parents[op.Path] {
			if wl.asked {
				return zkclient.Op{Kind: zkclient.GetChildren, Path: "/"}, true // filler while we wait
			}
			wl.asked = true
			return op, true
		}
	}
	wl.done++
	if wl.done > wl.ops {
		return zkclient.Op{}, false
	}
	wl.seq++
	data := []byte(fmt.Sprintf("c%d-%d", wl.client, wl.seq))
	key := keeperKeys[r.IntN(len(keeperKeys))]
	version := int32(-1)
	if r.Chance(0.3) {
		version = int32(r.IntN(3))
	}
	x := r.Float64()
	switch {
	case x < 0.10:
		return zkclient.Op{Kind: zkclient.Create, Path: key, Data: data, Version: -1}, true
	case x < 0.22:
		return zkclient.Op{Kind: zkclient.SetData, Path: key, Data: data, Version: version}, true
	case x < 0.28:
		return zkclient.Op{Kind: zkclient.Delete, Path: key, Version: version}, true
	case x < 0.36:
		return zkclient.Op{Kind: zkclient.Multi, Path: key, Multi: singleKeyMulti(r, key, data, version)}, true
	case x < 0.52:
		return zkclient.Op{Kind: zkclient.SyncRead, Path: key, Watch: r.Chance(0.3)}, true
	case x < 0.66:
		return zkclient.Op{Kind: zkclient.GetData, Path: key, Watch: true}, true
	case x < 0.74:
		return zkclient.Op{Kind: zkclient.Exists, Path: key, Watch: true}, true
	case x < 0.86:
		flags := jute.ModeEphemeral
		if r.Chance(0.5) {
			flags = jute.ModeEphemeralSequential
		}
		return zkclient.Op{Kind: zkclient.Create, Path: fmt.Sprintf("/e/c%d-", wl.client), Data: data, Flags: flags, Version: -1}, true
	case x < 0.93 && len(wl.ephemerals) > 0:
		i := r.IntN(len(wl.ephemerals))
		p := wl.ephemerals[i]
		wl.ephemerals = slices.Delete(wl.ephemerals, i, i+1)
		return zkclient.Op{Kind: zkclient.Delete, Path: p, Version: -1}, true
	case x < 0.98:
		return zkclient.Op{Kind: zkclient.GetChildren, Path: "/e"}, true
	}
	return zkclient.Op{Kind: zkclient.Close}, true
}

func singleKeyMulti(r *node.Rand, key string, data []byte, version int32) []jute.MultiOp {
	check := jute.MultiOp{Type: jute.OpCheck, Check: &jute.CheckVersionRequest{Path: key, Version: version}}
	set := jute.MultiOp{Type: jute.OpSetData, SetData: &jute.SetDataRequest{Path: key, Data: data, Version: -1}}
	create := jute.MultiOp{Type: jute.OpCreate, Create: &jute.CreateTTLRequest{Path: key, Data: data,
		ACL: []jute.ACL{{Perms: jute.PermAll, ID: jute.ID{Scheme: "world", ID: "anyone"}}}}}
	del := jute.MultiOp{Type: jute.OpDelete, Delete: &jute.DeleteRequest{Path: key, Version: version}}
	switch r.IntN(3) {
	case 0:
		return []jute.MultiOp{check, set}
	case 1:
		return []jute.MultiOp{create, set}
	}
	return []jute.MultiOp{del, create}
}

// ---- recording ----

func isKey(p string) bool { return slices.Contains(keeperKeys, p) }

func (kc *keeperChecks) invoke(client, id int, op zkclient.Op) {
	if !isKey(op.Path) {
		return
	}
	zo := &checker.ZKOp{Client: client, Key: op.Path, Data: string(op.Data), Version: op.Version, Call: int64(kc.w.Now()), FailIndex: -1}
	switch op.Kind {
	case zkclient.Create:
		zo.Kind = checker.ZKCreate
	case zkclient.SetData:
		zo.Kind = checker.ZKSet
	case zkclient.Delete:
		zo.Kind = checker.ZKDelete
	case zkclient.SyncRead:
		zo.Kind = checker.ZKRead
	case zkclient.Multi:
		zo.Kind = checker.ZKMulti
		for _, m := range op.Multi {
			switch m.Type {
			case jute.OpCheck:
				zo.Multi = append(zo.Multi, checker.ZKSub{Kind: checker.ZKCheck, Version: m.Check.Version})
			case jute.OpSetData:
				zo.Multi = append(zo.Multi, checker.ZKSub{Kind: checker.ZKSet, Data: string(m.SetData.Data), Version: m.SetData.Version})
			case jute.OpCreate:
				zo.Multi = append(zo.Multi, checker.ZKSub{Kind: checker.ZKCreate, Data: string(m.Create.Data)})
			case jute.OpDelete:
				zo.Multi = append(zo.Multi, checker.ZKSub{Kind: checker.ZKDelete, Version: m.Delete.Version})
			}
		}
	default:
		return // plain reads are only sequentially consistent
	}
	kc.ops[[2]int{client, id}] = zo
}

func (kc *keeperChecks) returned(client, id int, op zkclient.Op, res zkclient.Result, wl *keeperWorkload) {
	if op.Kind == zkclient.Create && slices.ContainsFunc(keeperSetup, func(s zkclient.Op) bool { return s.Path == op.Path }) {
		wl.asked = false
		if !res.Unknown && (res.Err == jute.ErrOK || res.Err == jute.ErrNodeExists) {
			wl.parents[op.Path] = true
		}
	}
	if op.Kind == zkclient.Create && op.Flags&1 == 1 && res.Err == jute.ErrOK && !res.Unknown {
		s := kc.sessions[client]
		if kc.live[s] == nil {
			kc.live[s] = map[string]bool{}
		}
		kc.live[s][res.Path] = true
		wl.ephemerals = append(wl.ephemerals, res.Path)
	}
	if op.Kind == zkclient.Delete && !isKey(op.Path) && (res.Unknown || res.Err == jute.ErrOK || res.Err == jute.ErrNoNode) {
		// Deleted, or maybe deleted: either way it need not exist any more.
		delete(kc.live[kc.sessions[client]], op.Path)
	}
	k := [2]int{client, id}
	zo := kc.ops[k]
	if zo == nil {
		return
	}
	delete(kc.ops, k)
	switch res.Err {
	case jute.ErrSessionExpired, jute.ErrSessionMoved, jute.ErrConnectionLoss:
		if !res.Unknown {
			return // refused before it was applied: it had no effect
		}
	}
	zo.Return = int64(kc.w.Now())
	zo.Unknown = res.Unknown
	zo.Err = res.Err
	switch zo.Kind {
	case checker.ZKSet:
		zo.OutVersion = res.Stat.Version
	case checker.ZKRead:
		zo.OutVersion, zo.OutData = res.Stat.Version, string(res.Data)
	case checker.ZKMulti:
		zo.Err = jute.ErrOK
		for i, m := range res.Multi {
			if m.Type == jute.OpError && m.Err != jute.ErrOK {
				zo.Err, zo.FailIndex = m.Err, i
				break
			}
		}
		if res.Err != jute.ErrOK {
			zo.Err = res.Err
		}
	}
	kc.history = append(kc.history, *zo)
}

func (kc *keeperChecks) sessionChanged(client int, old, new int64, wl *keeperWorkload) {
	if old != 0 {
		kc.ended[old] = true
		delete(kc.live, old)
		wl.ephemerals = nil
	}
	kc.sessions[client] = new
}

// clientDown records what a client's crash or kill leaves behind: its
// operations in flight have unknown outcomes (the servers may apply them
// yet), and its session lives on at the servers until it expires, with its
// ephemerals, so the run converges only once no server has it. The next
// incarnation starts a session of its own.
func (kc *keeperChecks) clientDown(client int, wl *keeperWorkload) {
	var ids []int
	for k := range kc.ops { // order-independent: sorted below
		if k[0] == client {
			ids = append(ids, k[1])
		}
	}
	slices.Sort(ids)
	for _, id := range ids {
		k := [2]int{client, id}
		zo := kc.ops[k]
		delete(kc.ops, k)
		zo.Unknown = true
		zo.Return = int64(kc.w.Now())
		kc.history = append(kc.history, *zo)
	}
	if s := kc.sessions[client]; s != 0 {
		kc.ended[s] = true
		kc.sessions[client] = 0
	}
	wl.ephemerals = nil
	wl.asked = false
}

// ---- checks ----

func (kc *keeperChecks) periodic() {
	if kc.w.failure != nil {
		return
	}
	kc.checkTrees()
	kc.checkHandshakes()
	kc.w.Q.After(500*time.Millisecond, funcHandler(kc.periodic), 0)
}

// checkHandshakes fails the run if a running server leaves a handshake
// unanswered past its deadline (keeper's writeTimeout) by more than a tick
// period: a client that waits for the answer as long as the connection
// stays open, as go-zookeeper 1.0.4 does, would wait for ever. The
// simulated clients give up after their session timeout, so without this
// check the liveness phase would not notice (the jepsen partition test,
// with go-zookeeper, hung on it).
func (kc *keeperChecks) checkHandshakes() {
	for i, n := range kc.servers {
		s := kc.server(i)
		if s == nil || n.Paused() || n.draining || len(n.backlog) > 0 {
			continue
		}
		if id, late, ok := s.OverdueHandshake(keeperTickTime); ok {
			kc.w.Fail(FailCorrectness, "handshake", "%s: connection %d's handshake is unanswered %v past its deadline", n.Name, id, late)
			return
		}
	}
}

func (kc *keeperChecks) checkTrees() {
	for i, n := range kc.servers {
		s := kc.server(i)
		if s == nil || !s.Raft().Status().Ready {
			continue
		}
		if err := s.Tree().CheckInvariants(); err != nil {
			kc.w.Fail(FailCorrectness, "tree", "%s: %v", n.Name, err)
			return
		}
	}
}

// MayCorrupt and Wiped: see raftGate.
func (kc *keeperChecks) MayCorrupt(n *Node) bool { return kc.gate.MayCorrupt(n) }
func (kc *keeperChecks) Wiped(n *Node)           { kc.gate.Wiped(n) }

func (kc *keeperChecks) Converged() (bool, string) {
	for _, c := range kc.clients {
		cl, _ := c.Machine().(*zkclient.Client)
		if cl == nil || !cl.Done() {
			return false, c.Name + " has not finished its workload"
		}
	}
	var lead *raft.Status
	for i, n := range kc.servers {
		s := kc.server(i)
		if s == nil {
			return false, n.Name + " is down"
		}
		st := s.Raft().Status()
		switch {
		case !st.Ready:
			return false, n.Name + " is recovering"
		case st.Abstain:
			return false, n.Name + " is abstaining"
		case st.Role == raft.Leader:
			lead = &st
		}
	}
	if lead == nil {
		return false, "no leader"
	}
	for i, n := range kc.servers {
		s := kc.server(i)
		st := s.Raft().Status()
		if st.Applied != lead.LastIndex {
			return false, fmt.Sprintf("%s applied %d of %d", n.Name, st.Applied, lead.LastIndex)
		}
		for id := range kc.ended { // order-independent: any one is reason enough to wait
			if s.Tree().HasSession(id) {
				return false, fmt.Sprintf("session 0x%x ended for its client but %s still has it (expiry pending)", id, n.Name)
			}
		}
	}
	return true, ""
}

func (kc *keeperChecks) Final() error {
	kc.checkTrees()
	if f := kc.w.failure; f != nil {
		return fmt.Errorf("%s", f.Message)
	}
	for i, n := range kc.servers {
		t := kc.server(i).Tree()
		sessions := make([]int64, 0, len(kc.live))
		for s := range kc.live { // order-independent: sorted below
			sessions = append(sessions, s)
		}
		slices.Sort(sessions)
		for _, s := range sessions {
			paths := make([]string, 0, len(kc.live[s]))
			for p := range kc.live[s] { // order-independent: sorted below
				paths = append(paths, p)
			}
			slices.Sort(paths)
			for _, p := range paths {
				if t.HasSession(s) && !t.Exists(p) {
					return fmt.Errorf("%s: ephemeral %s of live session 0x%x is missing", n.Name, p, s)
				}
			}
		}
	}
	for i, n := range kc.servers {
		for _, p := range keeperQuotas {
			if err := kc.server(i).Tree().QuotaStatsAgree(p); err != nil {
				return fmt.Errorf("%s: %v", n.Name, err)
			}
		}
	}
	if len(kc.history) == 0 {
		return fmt.Errorf("no znode operations were recorded")
	}
	return checker.CheckZKLinearizable(kc.history, "", time.Minute)
}

// keeperLogRatio maps a drawn raft SnapshotLogRatio to the keeper's, where 0
// means its default and off is negative.
func keeperLogRatio(r float64) float64 {
	if r == 0 {
		return -1
	}
	return r
}
