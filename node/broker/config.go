package broker

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"herd/node/broker/partlog"
)

// Config is a broker's configuration: what server.properties says, in
// Kafka's terms.
type Config struct {
	BrokerID int32
	// Listeners are where the broker accepts connections (listeners=).
	Listeners []Listener
	// Advertised are the addresses Metadata hands to clients
	// (advertised.listeners=, else Listeners). A host that is empty or
	// 0.0.0.0 and a port 0 must be resolved by whoever starts the broker,
	// before it runs (see cmd/herd's startBroker).
	Advertised []Listener
	// LogDirs is log.dirs (or log.dir). Only the first is used.
	LogDirs []string
	// NumPartitions is num.partitions: the partition count of topics
	// created without one.
	NumPartitions int32
	// DefaultReplicationFactor is default.replication.factor.
	DefaultReplicationFactor int16
	// Log is the default per-partition log configuration.
	Log partlog.Config
	// SocketRequestMaxBytes bounds a request's size; a larger one closes
	// the connection, as Kafka does.
	SocketRequestMaxBytes int
	// FetchMaxBytes is fetch.max.bytes: the most record bytes one Fetch
	// response carries, whatever the request asks for (Kafka's default,
	// 55 MiB, keeps a response inside the shell's send queue bound).
	FetchMaxBytes int
	// AutoCreateTopics is auto.create.topics.enable.
	AutoCreateTopics bool
	// ZookeeperConnect is zookeeper.connect, kept for clustering; a single
	// broker does not use it.
	ZookeeperConnect string
	// ClusterID is what Metadata reports as the cluster id.
	ClusterID string
	// Props are the keys the file set, as written (DescribeConfigs of the
	// broker reports them).
	Props map[string]string
	// Warnings are what the parser ignored, for the operator.
	Warnings []string
	// Bug plants a named bug for the simulator (partlog.Bug*, or
	// BugFetchStartZero); "" in production.
	Bug string
	// FetchCopyBelow: a Fetch response copies record sets smaller than
	// this into its own buffer and sends larger ones from the disk read's
	// buffer (0: copyRecordsBelow). Not a Kafka key: the simulator draws
	// small values so that its short logs are sent from read buffers too.
	FetchCopyBelow int
	// TrashStepBytes: deleted segments are emptied this many bytes per
	// step (0: brokerTrash's 4 MiB). Not a Kafka key: the simulator draws
	// small ones, so that its small segments are emptied in steps too.
	TrashStepBytes int64
}

// BugFetchStartZero makes Fetch report log start offset 0 however far
// retention moved it: a consumer reading below the start gets
// OFFSET_OUT_OF_RANGE with no hint that retention, not loss, is the cause.
const BugFetchStartZero = "fetch-start-zero"

// Listener is one entry of listeners= or advertised.listeners=.
type Listener struct {
	Name string // PLAINTEXT, or a name mapped to PLAINTEXT
	Host string
	Port int
}

// Addr is host:port, with IPv6 hosts bracketed.
func (l Listener) Addr() string { return joinHostPort(l.Host, strconv.Itoa(l.Port)) }

// Kafka's defaults.
const (
	DefaultSocketRequestMaxBytes = 104857600
	DefaultFetchMaxBytes         = 57671680
	DefaultPort                  = 9092
)

// DefaultConfig is a broker with Kafka's defaults, listening on
// PLAINTEXT://:9092, with its log in dir.
func DefaultConfig(dir string) Config {
	return Config{
		Listeners:                []Listener{{Name: "PLAINTEXT", Port: DefaultPort}},
		LogDirs:                  []string{dir},
		NumPartitions:            1,
		DefaultReplicationFactor: 1,
		Log:                      partlog.DefaultConfig(),
		SocketRequestMaxBytes:    DefaultSocketRequestMaxBytes,
		FetchMaxBytes:            DefaultFetchMaxBytes,
		AutoCreateTopics:         true,
		ClusterID:                "herd",
		Props:                    map[string]string{},
	}
}

// ParseServerProperties parses a Kafka server.properties. Keys herd does not
// use become warnings; a bad value is a one-line error naming the key.
func ParseServerProperties(text string) (Config, error) {
	props, order, err := parseProperties(text)
	if err != nil {
		return Config{}, err
	}
	c := DefaultConfig("/tmp/kafka-logs")
	c.Props = props
	bad := func(key, what string) error {
		return fmt.Errorf("server.properties: %s=%q: %s", key, props[key], what)
	}
	intIn := func(key string, lo, hi int64) (int64, bool, error) {
		v, ok := props[key]
		if !ok {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < lo || n > hi {
			if hi == math.MaxInt64 {
				return 0, true, bad(key, fmt.Sprintf("want an integer >= %d", lo))
			}
			return 0, true, bad(key, fmt.Sprintf("want an integer in [%d, %d]", lo, hi))
		}
		return n, true, nil
	}
	var protoMap map[string]string
	for _, key := range order {
		val := strings.TrimSpace(props[key])
		var n int64
		var err error
		switch key {
		case "broker.id":
			n, _, err = intIn(key, -1, math.MaxInt32)
			c.BrokerID = int32(n)
			if n == -1 {
				c.BrokerID = 0 // Kafka would generate one; a single broker is 0
			}
		case "listeners", "advertised.listeners", "listener.security.protocol.map":
			// Parsed below, once the protocol map is known.
		case "log.dirs", "log.dir":
			if key == "log.dir" && props["log.dirs"] != "" {
				c.Warnings = append(c.Warnings, "log.dir: log.dirs is set and takes precedence; ignored")
				continue
			}
			var dirs []string
			for _, d := range strings.Split(val, ",") {
				if d = strings.TrimSpace(d); d != "" {
					dirs = append(dirs, d)
				}
			}
			if len(dirs) == 0 {
				return c, bad(key, "want a directory")
			}
			if len(dirs) > 1 {
				return c, bad(key, "herd supports a single log directory")
			}
			c.LogDirs = dirs
		case "num.partitions":
			n, _, err = intIn(key, 1, math.MaxInt32)
			c.NumPartitions = int32(n)
		case "default.replication.factor":
			n, _, err = intIn(key, 1, math.MaxInt16)
			c.DefaultReplicationFactor = int16(n)
		case "log.segment.bytes":
			c.Log.SegmentBytes, _, err = intIn(key, 14, math.MaxInt32)
		case "log.retention.hours", "log.retention.minutes", "log.retention.ms":
			// Resolved below by precedence.
		case "log.retention.bytes":
			c.Log.RetentionBytes, _, err = intIn(key, -1, math.MaxInt64)
		case "log.roll.ms", "log.roll.hours":
		case "log.flush.interval.messages":
			c.Log.FlushMessages, _, err = intIn(key, 1, math.MaxInt64)
		case "log.flush.interval.ms":
			c.Log.FlushMs, _, err = intIn(key, 0, math.MaxInt64)
		case "log.index.interval.bytes":
			n, _, err = intIn(key, 0, math.MaxInt32)
			c.Log.IndexIntervalBytes = int(n)
		case "log.index.size.max.bytes":
			n, _, err = intIn(key, 4, math.MaxInt32)
			c.Log.SegmentIndexBytes = int(n)
		case "message.max.bytes":
			n, _, err = intIn(key, 0, math.MaxInt32)
			c.Log.MaxMessageBytes = int(n)
		case "socket.request.max.bytes":
			n, _, err = intIn(key, 1, math.MaxInt32)
			c.SocketRequestMaxBytes = int(n)
		case "fetch.max.bytes":
			n, _, err = intIn(key, 1024, math.MaxInt32)
			c.FetchMaxBytes = int(n)
		case "auto.create.topics.enable":
			c.AutoCreateTopics, err = parseBool(val)
			if err != nil {
				err = bad(key, "want true or false")
			}
		case "log.message.timestamp.type":
			switch val {
			case "CreateTime":
				c.Log.LogAppendTime = false
			case "LogAppendTime":
				c.Log.LogAppendTime = true
			default:
				err = bad(key, "want CreateTime or LogAppendTime")
			}
		case "zookeeper.connect":
			c.ZookeeperConnect = val
		case "cluster.id":
			c.ClusterID = val
		case "num.network.threads", "num.io.threads", "socket.send.buffer.bytes", "socket.receive.buffer.bytes",
			"num.recovery.threads.per.data.dir", "offsets.topic.replication.factor", "transaction.state.log.replication.factor",
			"transaction.state.log.min.isr", "log.retention.check.interval.ms", "zookeeper.connection.timeout.ms",
			"group.initial.rebalance.delay.ms", "log.cleaner.enable", "delete.topic.enable", "zookeeper.session.timeout.ms":
			c.Warnings = append(c.Warnings, key+": not used by herd; ignored")
		default:
			c.Warnings = append(c.Warnings, "unknown key "+key+"; ignored")
		}
		if err != nil {
			return c, err
		}
	}

	// Retention: ms over minutes over hours, as Kafka resolves them.
	if n, ok, err := intIn("log.retention.ms", -1, math.MaxInt64); err != nil {
		return c, err
	} else if ok {
		c.Log.RetentionMs = n
	} else if n, ok, err := intIn("log.retention.minutes", -1, math.MaxInt64/60_000); err != nil {
		return c, err
	} else if ok {
		c.Log.RetentionMs = n * 60_000
		if n < 0 {
			c.Log.RetentionMs = -1
		}
	} else if n, ok, err := intIn("log.retention.hours", -1, math.MaxInt64/3_600_000); err != nil {
		return c, err
	} else if ok {
		c.Log.RetentionMs = n * 3_600_000
		if n < 0 {
			c.Log.RetentionMs = -1
		}
	}
	if n, ok, err := intIn("log.roll.ms", 1, math.MaxInt64); err != nil {
		return c, err
	} else if ok {
		c.Log.SegmentMs = n
	} else if n, ok, err := intIn("log.roll.hours", 1, math.MaxInt64/3_600_000); err != nil {
		return c, err
	} else if ok {
		c.Log.SegmentMs = n * 3_600_000
	}

	if v, ok := props["listener.security.protocol.map"]; ok {
		protoMap = map[string]string{}
		for _, ent := range strings.Split(v, ",") {
			name, proto, ok := strings.Cut(strings.TrimSpace(ent), ":")
			if !ok || name == "" || proto == "" {
				return c, bad("listener.security.protocol.map", "want NAME:PROTOCOL,...")
			}
			protoMap[strings.ToUpper(name)] = strings.ToUpper(proto)
		}
	}
	if v, ok := props["listeners"]; ok {
		if c.Listeners, err = parseListeners("listeners", v, protoMap); err != nil {
			return c, err
		}
	}
	if v, ok := props["advertised.listeners"]; ok {
		if c.Advertised, err = parseListeners("advertised.listeners", v, protoMap); err != nil {
			return c, err
		}
	}
	return c, nil
}

// parseListeners parses NAME://host:port,... and checks every listener is
// plaintext: herd has no TLS or SASL.
func parseListeners(key, val string, protoMap map[string]string) ([]Listener, error) {
	var out []Listener
	for _, ent := range strings.Split(val, ",") {
		ent = strings.TrimSpace(ent)
		if ent == "" {
			continue
		}
		name, hostport, ok := strings.Cut(ent, "://")
		if !ok {
			return nil, fmt.Errorf("server.properties: %s: %q is not NAME://host:port", key, ent)
		}
		name = strings.ToUpper(name)
		proto := name
		switch {
		case protoMap == nil && name != "PLAINTEXT" && name != "SSL" && name != "SASL_PLAINTEXT" && name != "SASL_SSL":
			return nil, fmt.Errorf("server.properties: %s: listener %s is not a security protocol; map it in listener.security.protocol.map", key, name)
		case protoMap != nil:
			if p, ok := protoMap[name]; ok {
				proto = p
			} else {
				return nil, fmt.Errorf("server.properties: %s: listener %s is not in listener.security.protocol.map", key, name)
			}
		}
		if proto != "PLAINTEXT" {
			return nil, fmt.Errorf("server.properties: %s: listener %s uses %s; herd supports PLAINTEXT only", key, name, proto)
		}
		host, port, err := splitHostPort(hostport)
		if err != nil {
			return nil, fmt.Errorf("server.properties: %s: %q: %v", key, ent, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("server.properties: %s: %q: bad port", key, ent)
		}
		for _, l := range out {
			if l.Name == name {
				return nil, fmt.Errorf("server.properties: %s: listener name %s appears twice", key, name)
			}
		}
		out = append(out, Listener{Name: name, Host: host, Port: p})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("server.properties: %s: no listener given", key)
	}
	return out, nil
}

// parseProperties reads Java properties syntax: comment lines start with #
// or !, a key ends at the first unescaped '=', ':' or whitespace, a line
// ending in an odd number of backslashes continues on the next, and the
// usual escapes (\t, \n, \uXXXX, \=, ...) apply. It returns the keys in file
// order; a key set twice is an error (Java would keep the last silently,
// which hides typos).
func parseProperties(text string) (map[string]string, []string, error) {
	props := map[string]string{}
	var order []string
	lines := strings.Split(strings.ReplaceAll(text, "\r\n", "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		lineNo := i + 1
		line := strings.TrimLeft(lines[i], " \t\f")
		if line == "" || line[0] == '#' || line[0] == '!' {
			continue
		}
		// Join continuation lines.
		for endsInOddBackslashes(line) && i+1 < len(lines) {
			i++
			line = line[:len(line)-1] + strings.TrimLeft(lines[i], " \t\f")
		}
		if endsInOddBackslashes(line) {
			line = line[:len(line)-1]
		}
		// Split the key at the first unescaped separator.
		k := 0
		for k < len(line) {
			ch := line[k]
			if ch == '\\' {
				k += 2
				continue
			}
			if ch == '=' || ch == ':' || ch == ' ' || ch == '\t' || ch == '\f' {
				break
			}
			k++
		}
		k = min(k, len(line))
		rawKey, rest := line[:k], line[k:]
		rest = strings.TrimLeft(rest, " \t\f")
		if rest != "" && (rest[0] == '=' || rest[0] == ':') {
			rest = strings.TrimLeft(rest[1:], " \t\f")
		}
		key, err := unescapeProperty(rawKey)
		if err != nil {
			return nil, nil, fmt.Errorf("server.properties line %d: %v", lineNo, err)
		}
		val, err := unescapeProperty(rest)
		if err != nil {
			return nil, nil, fmt.Errorf("server.properties line %d: %v", lineNo, err)
		}
		if _, dup := props[key]; dup {
			return nil, nil, fmt.Errorf("server.properties line %d: %s is set twice", lineNo, key)
		}
		props[key] = strings.TrimRight(val, " \t")
		order = append(order, key)
	}
	return props, order, nil
}

func endsInOddBackslashes(s string) bool {
	n := 0
	for i := len(s) - 1; i >= 0 && s[i] == '\\'; i-- {
		n++
	}
	return n%2 == 1
}

func unescapeProperty(s string) (string, error) {
	if !strings.Contains(s, "\\") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch != '\\' || i+1 >= len(s) {
			b.WriteByte(ch)
			continue
		}
		i++
		switch s[i] {
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 'f':
			b.WriteByte('\f')
		case 'u':
			if i+5 > len(s) {
				return "", fmt.Errorf("malformed \\u escape in %q", s)
			}
			r, err := strconv.ParseUint(s[i+1:i+5], 16, 16)
			if err != nil {
				return "", fmt.Errorf("malformed \\u escape in %q", s)
			}
			b.WriteRune(rune(r))
			i += 4
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String(), nil
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, fmt.Errorf("not a boolean")
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

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m { // order-independent: sorted below
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
