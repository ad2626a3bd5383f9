package keeper

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"herd/node/raft"
)

// Config is a keeper server's configuration: what zoo.cfg says, in
// ZooKeeper's terms, plus myid.
type Config struct {
	// FileDescriptors, if set, reports the process's open file
	// descriptors and their limit for mntr (zk_open_file_descriptor_count,
	// zk_max_file_descriptor_count); the production shell reads them from
	// the OS, which the core may not touch.
	FileDescriptors func() (open, max int64, ok bool)
	// Recovered, if set, is called once, from the server's event loop,
	// when recovery has finished and the server takes part: the
	// production shell returns the restore's transient memory to the OS
	// then (cmd/herd's heap trim), which the core may not do itself.
	Recovered func()

	ID         raft.ID
	TickTime   time.Duration
	InitLimit  int
	SyncLimit  int
	DataDir    string
	DataLogDir string
	// ClientAddr is where clients connect (clientPortAddress:clientPort).
	ClientAddr string
	Servers    []ServerSpec
	// MaxClientCnxns bounds concurrent connections from one IP (0: none).
	MaxClientCnxns int
	// FourLetter lists the four-letter words answered ("*": all).
	FourLetter        []string
	MinSessionTimeout time.Duration
	MaxSessionTimeout time.Duration
	// TTLEnabled: ZooKeeper's extendedTypesEnabled (TTL nodes).
	TTLEnabled bool
	// EnforceQuota: ZooKeeper's enforceQuota: a write past a quota's hard
	// limit fails with QuotaExceeded.
	EnforceQuota bool
	// SuperDigest: "super:<base64 sha1>" (DigestAuthenticationProvider.superDigest).
	SuperDigest string
	// MaxBuffer is jute.maxbuffer: the largest request or znode accepted.
	MaxBuffer int
	// ContainerCheck is znode.container.checkIntervalMs.
	ContainerCheck time.Duration
	// Warnings are what the parser ignored, for the operator.
	Warnings []string

	// Raft tuning, derived from tickTime unless set.
	RaftTick      time.Duration
	ElectionTicks int
	SnapshotEvery uint64
	// SnapshotStep is how many znodes a snapshot encodes per event (raft's
	// Config.SnapshotStep); 0 means raft's default. The simulator makes it
	// small so snapshots span many events.
	SnapshotStep int
	// WALFill, SnapshotSyncBytes, TrimBytes and RestoreReadBytes are
	// raft's (0: its defaults). The simulator draws small ones so that all
	// happen often.
	WALFill           int64
	SnapshotSyncBytes int
	TrimBytes         int64
	RestoreReadBytes  int
	// SnapshotChunk is raft's: the bytes of a snapshot one install message
	// carries (0: raft's 1 MiB). The simulator draws small ones.
	SnapshotChunk int
	// LogChunk is raft's (0: its default); the simulator draws small ones.
	LogChunk int
	// LogKeep is raft's (0: its default); the simulator draws small ones.
	LogKeep int
	// SnapshotLoopShare is raft's (0: its default).
	SnapshotLoopShare float64
	// SnapshotLogRatio is raft's: a snapshot also waits until the WAL since
	// the last one is this many times that snapshot's size, so that a big
	// tree is not encoded whole every 50-100 k writes. 0: 1; negative: off,
	// as when zoo.cfg sets snapCount (the operator chose the cadence).
	SnapshotLogRatio float64
	// NoAppendCoalescing is raft's; the simulator sweeps both ways.
	NoAppendCoalescing bool
	// NoPeerAcks is raft's; the simulator sweeps both ways.
	NoPeerAcks bool
	// Rejoin: this server's disk was replaced while the ensemble kept its
	// data; it must not vote until a leader has caught it up (raft.Config).
	Rejoin bool
	// Bug plants a bug for checker tests (Bug* constants).
	Bug string
	// SnapshotCheck (simulation): if set, every snapshot this server
	// encodes is decoded and compared with the tree as it was when the
	// snapshot began, and a difference is reported to it.
	SnapshotCheck func(err error)
}

// Planted bugs, so tests can prove the simulator's checkers catch them.
const (
	BugStaleSync      = "stale-sync"      // answer sync at once, without a ReadIndex barrier
	BugLateWatch      = "late-watch"      // send watch events at the next tick instead of before later replies
	BugKeepEphemerals = "keep-ephemerals" // a closed or expired session leaves its ephemerals behind
	BugServeBehind    = "serve-behind"    // serve a client whose lastZxidSeen is ahead of this server
	BugDoubleWatch    = "double-watch"    // one-shot watches are not removed when they fire
	BugFuzzySnapshot  = "fuzzy-snapshot"  // setData keeps no image for a snapshot being encoded
	BugQuotaForgotten = "quota-forgotten" // a tree restored from a snapshot forgets which paths are under quota
	BugQuotaMulti     = "quota-multi"     // changes made inside a multi are not counted in quota stats
	BugStuckConnect   = "stuck-connect"   // a handshake whose session creation or read point was lost waits for ever
)

// ServerSpec is one server.N line.
type ServerSpec struct {
	ID           raft.ID
	Host         string
	QuorumPort   int
	ElectionPort int
	// ClientAddr, if the line gives one (";host:port" or ";port").
	ClientAddr string
}

// PeerAddr is the address the ensemble uses between servers (the quorum
// port; herd needs no separate election port).
func (s ServerSpec) PeerAddr() string { return joinHostPort(s.Host, strconv.Itoa(s.QuorumPort)) }

// Defaults as ZooKeeper 3.8 has them.
const (
	DefaultTickTime  = 2 * time.Second
	DefaultMaxBuffer = 0xfffff
)

// Defaults fills what a Config leaves zero.
func (c *Config) Defaults() {
	if c.TickTime <= 0 {
		c.TickTime = DefaultTickTime
	}
	if c.InitLimit <= 0 {
		c.InitLimit = 10
	}
	if c.SyncLimit <= 0 {
		c.SyncLimit = 5
	}
	if c.MinSessionTimeout <= 0 {
		c.MinSessionTimeout = 2 * c.TickTime
	}
	if c.MaxSessionTimeout <= 0 {
		c.MaxSessionTimeout = 20 * c.TickTime
	}
	if c.MaxBuffer <= 0 {
		c.MaxBuffer = DefaultMaxBuffer
	}
	if c.ContainerCheck <= 0 {
		c.ContainerCheck = time.Minute
	}
	if c.FourLetter == nil {
		c.FourLetter = []string{"srvr"}
	}
	if c.RaftTick <= 0 {
		// Heartbeats well inside the shortest session timeout: a session
		// must survive a leader change.
		c.RaftTick = min(max(c.TickTime/20, 10*time.Millisecond), 100*time.Millisecond)
	}
	if c.ElectionTicks <= 0 {
		// A leader is presumed dead after about one tickTime of silence
		// (2 s by default; ZooKeeper's followers wait syncLimit ticks, 10 s).
		// Shorter made elections out of stalls: a snapshot of a million
		// znodes holds a server's loop for a second or more.
		c.ElectionTicks = max(10, int(c.TickTime/c.RaftTick))
	}
	if c.SnapshotEvery == 0 {
		c.SnapshotEvery = 100_000 // ZooKeeper's snapCount default
	}
	if c.SnapshotLogRatio == 0 {
		c.SnapshotLogRatio = 1
	}
}

// fourLetterWords are the commands herd answers.
var fourLetterWords = []string{"conf", "cons", "envi", "isro", "mntr", "ruok", "srvr", "stat", "wchs"}

// ParseZooCfg parses a zoo.cfg. myid is not in it; the caller reads it from
// dataDir. Unknown keys become warnings; bad values are errors naming the
// line.
func ParseZooCfg(text string) (Config, error) {
	var c Config
	clientPort, clientPortAddr := 0, ""
	seen := map[string]int{}
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return c, fmt.Errorf("zoo.cfg line %d: %q is not key=value", i+1, line)
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		if prev, dup := seen[key]; dup {
			return c, fmt.Errorf("zoo.cfg line %d: %s is set again (first on line %d)", i+1, key, prev)
		}
		seen[key] = i + 1
		bad := func(what string) error {
			return fmt.Errorf("zoo.cfg line %d: %s=%q: %s", i+1, key, val, what)
		}
		num := func() (int, error) {
			n, err := strconv.Atoi(val)
			if err != nil || n < 0 {
				return 0, bad("want a non-negative integer")
			}
			return n, nil
		}
		ms := func() (time.Duration, error) {
			n, err := num()
			return time.Duration(n) * time.Millisecond, err
		}
		var err error
		switch {
		case key == "tickTime":
			c.TickTime, err = ms()
			if err == nil && c.TickTime == 0 {
				err = bad("must be positive")
			}
		case key == "initLimit":
			c.InitLimit, err = num()
		case key == "syncLimit":
			c.SyncLimit, err = num()
		case key == "dataDir":
			c.DataDir = val
		case key == "dataLogDir":
			c.DataLogDir = val
		case key == "clientPort":
			clientPort, err = num()
			if err == nil && (clientPort == 0 || clientPort > 65535) {
				err = bad("want a port number")
			}
		case key == "clientPortAddress":
			clientPortAddr = val
		case key == "maxClientCnxns":
			c.MaxClientCnxns, err = num()
		case key == "minSessionTimeout":
			c.MinSessionTimeout, err = ms()
		case key == "maxSessionTimeout":
			c.MaxSessionTimeout, err = ms()
		case key == "4lw.commands.whitelist":
			c.FourLetter = nil
			for _, w := range strings.Split(val, ",") {
				w = strings.TrimSpace(w)
				if w == "" {
					continue
				}
				if w != "*" && !slices.Contains(fourLetterWords, w) {
					c.Warnings = append(c.Warnings, fmt.Sprintf("4lw.commands.whitelist: herd does not implement %q", w))
				}
				c.FourLetter = append(c.FourLetter, w)
			}
			if c.FourLetter == nil {
				c.FourLetter = []string{}
			}
		case key == "extendedTypesEnabled" || key == "zookeeper.extendedTypesEnabled":
			c.TTLEnabled, err = parseBool(val)
			if err != nil {
				err = bad("want true or false")
			}
		case key == "enforceQuota" || key == "zookeeper.enforceQuota":
			c.EnforceQuota, err = parseBool(val)
			if err != nil {
				err = bad("want true or false")
			}
		case key == "DigestAuthenticationProvider.superDigest" || key == "zookeeper.DigestAuthenticationProvider.superDigest":
			if _, _, ok := strings.Cut(val, ":"); !ok {
				err = bad("want super:<base64 sha1 digest>")
			}
			c.SuperDigest = val
		case key == "jute.maxbuffer":
			c.MaxBuffer, err = num()
		case key == "snapCount":
			var n int
			n, err = num()
			c.SnapshotEvery = uint64(max(n, 1))
			c.SnapshotLogRatio = -1
		case key == "znode.container.checkIntervalMs":
			c.ContainerCheck, err = ms()
		case strings.HasPrefix(key, "server."):
			var s ServerSpec
			s, err = parseServerLine(key, val)
			if err != nil {
				err = fmt.Errorf("zoo.cfg line %d: %v", i+1, err)
			}
			c.Servers = append(c.Servers, s)
		case key == "autopurge.snapRetainCount" || key == "autopurge.purgeInterval":
			if _, err = num(); err == nil {
				c.Warnings = append(c.Warnings, key+": herd compacts its log itself; accepted and ignored")
			}
		case key == "admin.enableServer" || key == "admin.serverPort" || key == "standaloneEnabled" ||
			key == "reconfigEnabled" || key == "syncEnabled" || key == "preAllocSize" ||
			key == "globalOutstandingLimit" || key == "electionAlg" || key == "quorumListenOnAllIPs" ||
			key == "leaderServes" || key == "cnxTimeout" || strings.HasPrefix(key, "metricsProvider.") ||
			strings.HasPrefix(key, "authProvider."):
			c.Warnings = append(c.Warnings, key+": not used by herd; ignored")
		default:
			c.Warnings = append(c.Warnings, fmt.Sprintf("line %d: unknown key %s; ignored", i+1, key))
		}
		if err != nil {
			return c, err
		}
	}
	if clientPort == 0 {
		return c, fmt.Errorf("zoo.cfg: clientPort is missing")
	}
	if clientPortAddr == "" {
		clientPortAddr = "0.0.0.0"
	}
	c.ClientAddr = joinHostPort(clientPortAddr, strconv.Itoa(clientPort))
	slices.SortFunc(c.Servers, func(a, b ServerSpec) int { return int(a.ID) - int(b.ID) })
	for i := 1; i < len(c.Servers); i++ {
		if c.Servers[i].ID == c.Servers[i-1].ID {
			return c, fmt.Errorf("zoo.cfg: server.%d appears twice", c.Servers[i].ID)
		}
	}
	c.Defaults()
	if c.MinSessionTimeout > c.MaxSessionTimeout {
		return c, fmt.Errorf("zoo.cfg: minSessionTimeout %v is above maxSessionTimeout %v", c.MinSessionTimeout, c.MaxSessionTimeout)
	}
	if c.DataDir == "" {
		return c, fmt.Errorf("zoo.cfg: dataDir is missing")
	}
	return c, nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "yes":
		return true, nil
	case "false", "no":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
}

// parseServerLine parses server.N=host:quorumPort:electionPort[:role][;[clientHost:]clientPort].
func parseServerLine(key, val string) (ServerSpec, error) {
	var s ServerSpec
	id, err := strconv.ParseUint(strings.TrimPrefix(key, "server."), 10, 8)
	if err != nil || id == 0 {
		return s, fmt.Errorf("%s: the server id must be 1-255", key)
	}
	s.ID = raft.ID(id)
	addr, client, _ := strings.Cut(val, ";")
	parts := strings.Split(addr, ":")
	if len(parts) < 3 || len(parts) > 4 {
		return s, fmt.Errorf("%s=%q: want host:quorumPort:electionPort", key, val)
	}
	s.Host = parts[0]
	if s.QuorumPort, err = strconv.Atoi(parts[1]); err != nil || s.QuorumPort <= 0 || s.QuorumPort > 65535 {
		return s, fmt.Errorf("%s=%q: bad quorum port", key, val)
	}
	if s.ElectionPort, err = strconv.Atoi(parts[2]); err != nil || s.ElectionPort <= 0 || s.ElectionPort > 65535 {
		return s, fmt.Errorf("%s=%q: bad election port", key, val)
	}
	if len(parts) == 4 && parts[3] != "participant" {
		return s, fmt.Errorf("%s=%q: herd supports participants only (not %q)", key, val, parts[3])
	}
	if client != "" {
		h, p, err := splitHostPort(client)
		if err != nil {
			h, p = "0.0.0.0", client
		}
		if _, err := strconv.Atoi(p); err != nil {
			return s, fmt.Errorf("%s=%q: bad client port", key, val)
		}
		s.ClientAddr = joinHostPort(h, p)
	}
	return s, nil
}

// joinHostPort and splitHostPort are net's, here so this core package does
// not import net.
func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

func splitHostPort(addr string) (host, port string, err error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", "", fmt.Errorf("missing port in %q", addr)
	}
	host, port = addr[:i], addr[i+1:]
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return host, port, nil
}
