package keeper

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"herd/node/jute"
	"herd/node/raft"
)

// Version is what herd reports as its ZooKeeper version. The shape matters:
// go-zookeeper's FLWSrvr parses "Zookeeper version: X, built on MM/DD/YYYY
// HH:MM TZ", kazoo's server_version() reads the digits of
// "zookeeper.version=".
const Version = "3.8.0-herd, built on 01/01/2026 00:00 GMT"

// allFourLetterWords are ZooKeeper's; the first four bytes of a connection
// are checked against them before being taken as a frame length.
var allFourLetterWords = []string{"conf", "cons", "crst", "dirs", "dump", "envi", "gtmk", "ruok", "stmk",
	"srvr", "srst", "stat", "wchc", "wchp", "wchs", "mntr", "isro"}

func isFourLetterShaped(b []byte) bool { return slices.Contains(allFourLetterWords, string(b)) }

func (s *Server) whitelisted(word string) bool {
	return slices.Contains(s.cfg.FourLetter, "*") || slices.Contains(s.cfg.FourLetter, word)
}

// fourLetter answers a four-letter word in plain text and closes the
// connection, as ZooKeeper does.
func (s *Server) fourLetter(c *conn, word string) {
	var out string
	switch {
	case !slices.Contains(fourLetterWords, word) || !s.whitelisted(word):
		out = word + " is not executed because it is not in the whitelist.\n"
	case word == "ruok":
		out = "imok"
	case word == "isro":
		out = "rw"
	case word == "srvr":
		out = s.srvr(true)
	case word == "stat":
		out = s.statText()
	case word == "envi":
		out = "Environment:\nzookeeper.version=" + Version + "\nhost.name=herd\njava.version=none (herd is written in Go)\n"
	case word == "conf":
		out = s.confText()
	case word == "mntr":
		out = s.mntr()
	case word == "wchs":
		out = fmt.Sprintf("%d connections watching %d paths\nTotal watches:%d\n", len(s.watches.byConn), s.watchedPaths(), s.watches.total)
	case word == "cons":
		out = s.consText()
	}
	s.env.Send(c.id, []byte(out))
	s.drop(c, "")
}

func (s *Server) mode() string {
	st := s.raft.Status()
	switch {
	case !st.Ready || st.Leader == 0:
		return ""
	case len(s.cfg.Servers) <= 1:
		return "standalone"
	case st.Role == raft.Leader:
		return "leader"
	}
	return "follower"
}

func (s *Server) srvr(version bool) string {
	mode := s.mode()
	if mode == "" {
		return "This ZooKeeper instance is not currently serving requests\n"
	}
	var b strings.Builder
	if version {
		fmt.Fprintf(&b, "Zookeeper version: %s\n", Version)
	}
	st := s.stats
	avg := 0.0
	if st.latN > 0 {
		avg = float64(st.latSum.Microseconds()) / 1000 / float64(st.latN)
	}
	fmt.Fprintf(&b, "Latency min/avg/max: %d/%.4f/%d\n", st.latMin.Milliseconds(), avg, st.latMax.Milliseconds())
	fmt.Fprintf(&b, "Received: %d\nSent: %d\nConnections: %d\nOutstanding: %d\nZxid: 0x%x\nMode: %s\nNode count: %d\n",
		st.received, st.sent, len(s.conns), len(s.pending), s.tree.Zxid(), mode, zkNodeCount(s.tree))
	return b.String()
}

func (s *Server) sortedConns() []*conn {
	out := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns { // order-independent: sorted below
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *conn) int { return int(a.id) - int(b.id) })
	return out
}

func (s *Server) consText() string {
	var b strings.Builder
	for _, c := range s.sortedConns() {
		fmt.Fprintf(&b, " /%s[%d](queued=%d,recved=%d,sent=%d", c.remote, 1, len(c.queue), c.recv, c.sent)
		if c.session != 0 && c.state == cOpen {
			// ZooKeeper's format (ServerCnxn.dumpConnectionInfo); go-zookeeper's
			// FLWCons parses exactly this field order.
			avg := int64(0)
			if c.latCount > 0 {
				avg = c.latSumMs / c.latCount
			}
			fmt.Fprintf(&b, ",sid=0x%x,lop=%s,est=%d,to=%d", c.session, c.lastOp, c.est, c.timeout)
			if c.lastCxid >= 0 {
				fmt.Fprintf(&b, ",lcxid=0x%x", c.lastCxid)
			}
			fmt.Fprintf(&b, ",lzxid=0x%x,lresp=%d,llat=%d,minlat=%d,avglat=%d,maxlat=%d",
				c.lastZxid, c.lastResp, c.lastLat, c.minLat, avg, c.maxLat)
		}
		b.WriteString(")\n")
	}
	return b.String() + "\n"
}

func (s *Server) statText() string {
	if s.mode() == "" {
		return s.srvr(true)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Zookeeper version: %s\nClients:\n", Version)
	for _, c := range s.sortedConns() {
		fmt.Fprintf(&b, " /%s[%d](queued=%d,recved=%d,sent=%d)\n", c.remote, 1, len(c.queue), c.recv, c.sent)
	}
	b.WriteString("\n")
	b.WriteString(s.srvr(false))
	return b.String()
}

func (s *Server) confText() string {
	c := s.cfg
	var b strings.Builder
	ms := func(d time.Duration) int64 { return d.Milliseconds() }
	fmt.Fprintf(&b, "clientPort=%s\n", c.ClientAddr[strings.LastIndexByte(c.ClientAddr, ':')+1:])
	fmt.Fprintf(&b, "clientPortAddress=%s\n", c.ClientAddr)
	fmt.Fprintf(&b, "dataDir=%s\ndataDirSize=0\ndataLogDir=%s\ndataLogSize=0\n", c.DataDir, orDefault(c.DataLogDir, c.DataDir))
	fmt.Fprintf(&b, "tickTime=%d\nmaxClientCnxns=%d\nminSessionTimeout=%d\nmaxSessionTimeout=%d\n",
		ms(c.TickTime), c.MaxClientCnxns, ms(c.MinSessionTimeout), ms(c.MaxSessionTimeout))
	fmt.Fprintf(&b, "clientPortListenBacklog=-1\nserverId=%d\n", c.ID)
	if len(c.Servers) > 1 {
		fmt.Fprintf(&b, "initLimit=%d\nsyncLimit=%d\nelectionAlg=raft\nelectionPort=-1\nquorumPort=-1\npeerType=0\nmembership: \n", c.InitLimit, c.SyncLimit)
		for _, sp := range c.Servers {
			fmt.Fprintf(&b, "server.%d=%s:%d:%d:participant\n", sp.ID, sp.Host, sp.QuorumPort, sp.ElectionPort)
		}
		b.WriteString("version=0\n")
	}
	return b.String()
}

func orDefault(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

func (s *Server) mntr() string {
	var b strings.Builder
	st := s.stats
	avg := 0.0
	if st.latN > 0 {
		avg = float64(st.latSum.Microseconds()) / 1000 / float64(st.latN)
	}
	ephemerals := 0
	for _, sess := range s.tree.sessions { // order-independent: counting
		ephemerals += len(sess.ephemerals)
	}
	state := s.mode()
	if state == "" {
		state = "looking"
	}
	lines := [][2]string{
		{"zk_version", Version},
		{"zk_server_state", state},
		{"zk_avg_latency", fmt.Sprintf("%.4f", avg)},
		{"zk_max_latency", fmt.Sprint(st.latMax.Milliseconds())},
		{"zk_min_latency", fmt.Sprint(st.latMin.Milliseconds())},
		{"zk_packets_received", fmt.Sprint(st.received)},
		{"zk_packets_sent", fmt.Sprint(st.sent)},
		{"zk_num_alive_connections", fmt.Sprint(len(s.conns))},
		{"zk_outstanding_requests", fmt.Sprint(len(s.pending))},
		{"zk_znode_count", fmt.Sprint(zkNodeCount(s.tree))},
		{"zk_watch_count", fmt.Sprint(s.watches.total)},
		{"zk_ephemerals_count", fmt.Sprint(ephemerals)},
		{"zk_approximate_data_size", fmt.Sprint(s.tree.dataSize())},
		{"zk_uptime", fmt.Sprint(s.env.Now().Sub(s.started).Milliseconds())},
	}
	if s.cfg.FileDescriptors != nil {
		if open, limit, ok := s.cfg.FileDescriptors(); ok {
			lines = append(lines, [2]string{"zk_open_file_descriptor_count", fmt.Sprint(open)},
				[2]string{"zk_max_file_descriptor_count", fmt.Sprint(limit)})
		}
	}
	if state == "leader" {
		// The leader-only keys of ZooKeeper 3.8 (zk_followers is older releases'
		// name for zk_learners). zk_pending_syncs: the followers' syncs
		// the leader has not answered yet; here, their read-index requests.
		lines = append(lines, [2]string{"zk_learners", fmt.Sprint(len(s.cfg.Servers) - 1)},
			[2]string{"zk_synced_followers", fmt.Sprint(s.syncedFollowers())},
			[2]string{"zk_synced_non_voting_followers", "0"},
			[2]string{"zk_synced_observers", "0"},
			[2]string{"zk_pending_syncs", fmt.Sprint(s.raft.Status().RemoteReads)})
	}
	for _, l := range lines {
		fmt.Fprintf(&b, "%s\t%s\n", l[0], l[1])
	}
	return b.String()
}

func (s *Server) syncedFollowers() int {
	st := s.raft.Status()
	n := 0
	for _, p := range st.Progress {
		if p.Match >= st.Commit {
			n++
		}
	}
	return n
}

func (s *Server) watchedPaths() int {
	n := 0
	for _, m := range s.watches.byPath {
		n += len(m)
	}
	return n
}

// consOpName is the short operation name ZooKeeper's `cons` shows as lop=
// (FinalRequestProcessor's lastOp).
func consOpName(op int32) string {
	switch op {
	case jute.OpPing:
		return "PING"
	case jute.OpCreate, jute.OpCreate2, jute.OpCreateContainer, jute.OpCreateTTL:
		return "CREA"
	case jute.OpDelete:
		return "DELE"
	case jute.OpSetData:
		return "SETD"
	case jute.OpGetData:
		return "GETD"
	case jute.OpExists:
		return "EXIS"
	case jute.OpGetChildren:
		return "GETC"
	case jute.OpGetChildren2:
		return "GETC"
	case jute.OpGetACL:
		return "GETA"
	case jute.OpSetACL:
		return "SETA"
	case jute.OpSync:
		return "SYNC"
	case jute.OpMulti:
		return "MULT"
	case jute.OpMultiRead:
		return "MLTR"
	case jute.OpCloseSession:
		return "CLOS"
	case jute.OpSetWatches, jute.OpSetWatches2:
		return "SETW"
	case jute.OpCheckWatches:
		return "CHKW"
	case jute.OpRemoveWatches:
		return "REMW"
	case jute.OpAddWatch:
		return "ADDW"
	case jute.OpGetEphemerals:
		return "GETE"
	case jute.OpGetAllChildrenNumber:
		return "GETACN"
	case jute.OpWhoAmI:
		return "HOMI"
	}
	return "NA"
}

// zkNodeCount is the node count ZooKeeper reports: its DataTree holds the
// root under both "" and "/", so a fresh tree (/, /zookeeper,
// /zookeeper/config, /zookeeper/quota) counts 5.
func zkNodeCount(t *Tree) int { return t.Count() + 1 }
