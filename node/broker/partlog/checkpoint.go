package partlog

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"herd/node"
)

// Dir-level files, named as Kafka names them so an operator recognises them.
const (
	recoveryPointFile  = "recovery-point-offset-checkpoint"
	logStartFile       = "log-start-offset-checkpoint"
	highWatermarkFile  = "replication-offset-checkpoint"
	cleanShutdownFile  = ".kafka_cleanshutdown"
	partitionMetaFile  = "partition.metadata"
	topicOverridesFile = "herd-topic.properties" // herd's own: see DESIGN-partlog.md
	deleteDirSuffix    = "-delete"               // "<topic>-<partition>.<tag>-delete"
)

// checkpointEntry is one line of a checkpoint file.
type checkpointEntry struct {
	tp     TopicPartition
	offset int64
}

// encodeCheckpoint writes Kafka's OffsetCheckpointFile format: the version
// (0), the entry count, then "topic partition offset" lines.
func encodeCheckpoint(es []checkpointEntry) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "0\n%d\n", len(es))
	for _, e := range es {
		fmt.Fprintf(&b, "%s %d %d\n", e.tp.Topic, e.tp.Partition, e.offset)
	}
	return []byte(b.String())
}

// decodeCheckpoint parses a checkpoint file. Anything malformed (a torn
// write cannot happen, as the file is replaced by rename, but bit rot can)
// rejects the whole file: the caller then recovers as if it were missing,
// which costs a rescan and never loses data.
func decodeCheckpoint(b []byte) (map[TopicPartition]int64, bool) {
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) < 2 || lines[0] != "0" {
		return nil, false
	}
	n, err := strconv.Atoi(lines[1])
	if err != nil || n != len(lines)-2 {
		return nil, false
	}
	out := make(map[TopicPartition]int64, n)
	for _, line := range lines[2:] {
		f := strings.Split(line, " ")
		if len(f) != 3 || !validTopic(f[0]) {
			return nil, false
		}
		p, err1 := strconv.ParseInt(f[1], 10, 32)
		off, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || p < 0 || off < 0 {
			return nil, false
		}
		out[TopicPartition{f[0], int32(p)}] = off
	}
	return out, true
}

// validTopic is Kafka's rule for topic names: 1-249 of [a-zA-Z0-9._-], and
// not "." or "..". It also keeps every name safe as a path element and as a
// checkpoint field.
func validTopic(s string) bool {
	if len(s) == 0 || len(s) > 249 || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// partitionDirName is "<topic>-<partition>".
func partitionDirName(tp TopicPartition) string {
	return tp.Topic + "-" + strconv.Itoa(int(tp.Partition))
}

// parsePartitionDirName splits at the last '-' (topics may contain '-').
func parsePartitionDirName(name string) (TopicPartition, bool) {
	i := strings.LastIndexByte(name, '-')
	if i <= 0 {
		return TopicPartition{}, false
	}
	p, err := strconv.ParseInt(name[i+1:], 10, 32)
	if err != nil || p < 0 || strconv.FormatInt(p, 10) != name[i+1:] || !validTopic(name[:i]) {
		return TopicPartition{}, false
	}
	return TopicPartition{name[:i], int32(p)}, true
}

// encodePartitionMetadata writes Kafka's partition.metadata: the topic id
// as Uuid.toString renders it (URL-safe base64 without padding).
func encodePartitionMetadata(id [16]byte) []byte {
	return []byte("version: 0\ntopic_id: " + base64.RawURLEncoding.EncodeToString(id[:]) + "\n")
}

func decodePartitionMetadata(b []byte) ([16]byte, bool) {
	var id [16]byte
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 || strings.TrimSpace(lines[0]) != "version: 0" {
		return id, false
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(lines[1]), "topic_id: ")
	if !ok {
		return id, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(v))
	if err != nil || len(raw) != 16 {
		return id, false
	}
	copy(id[:], raw)
	return id, true
}

// encodeOverrides writes the topic-level overrides as sorted key=value
// lines under a comment saying what the file is.
func encodeOverrides(o map[string]string) []byte {
	var b strings.Builder
	b.WriteString("# herd: topic-level config overrides of this partition (key=value)\n")
	for _, k := range slices.Sorted(mapKeys(o)) {
		b.WriteString(k + "=" + o[k] + "\n")
	}
	return []byte(b.String())
}

func decodeOverrides(b []byte) (map[string]string, bool) {
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" {
			return nil, false
		}
		out[k] = v
	}
	return out, true
}

func mapKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		// order-independent: callers sort what this yields.
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// ErrInvalidConfig is returned by CreateLog for an override it cannot use.
var ErrInvalidConfig = errors.New("partlog: invalid topic config override")

// timestampTypeKey selects CreateTime (default) or LogAppendTime.
const timestampTypeKey = "message.timestamp.type"

// applyOverrides returns base with the topic-level keys partlog knows
// applied. Keys it does not know (cleanup.policy, min.insync.replicas, ...)
// are the broker's business: they are kept and persisted, not interpreted.
func applyOverrides(base Config, o map[string]string) (Config, error) {
	cfg := base
	for _, k := range slices.Sorted(mapKeys(o)) {
		v := o[k]
		if strings.ContainsAny(k, "=\n#") || strings.Contains(v, "\n") {
			return base, fmt.Errorf("%w: %q", ErrInvalidConfig, k)
		}
		if k == timestampTypeKey {
			switch v {
			case "CreateTime":
				cfg.LogAppendTime = false
			case "LogAppendTime":
				cfg.LogAppendTime = true
			default:
				return base, fmt.Errorf("%w: %s=%q", ErrInvalidConfig, k, v)
			}
			continue
		}
		type field struct {
			i64 *int64
			i   *int
			min int64
		}
		fields := map[string]field{
			"segment.bytes":        {i64: &cfg.SegmentBytes, min: batchHeaderSize},
			"segment.ms":           {i64: &cfg.SegmentMs, min: 1},
			"retention.bytes":      {i64: &cfg.RetentionBytes, min: -1},
			"retention.ms":         {i64: &cfg.RetentionMs, min: -1},
			"index.interval.bytes": {i: &cfg.IndexIntervalBytes, min: 0},
			"segment.index.bytes":  {i: &cfg.SegmentIndexBytes, min: 4 * offsetEntrySize},
			"max.message.bytes":    {i: &cfg.MaxMessageBytes, min: 0},
			"flush.messages":       {i64: &cfg.FlushMessages, min: 0},
			"flush.ms":             {i64: &cfg.FlushMs, min: 0},
		}
		f, known := fields[k]
		if !known {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < f.min || (f.i != nil && n > math.MaxInt32) {
			return base, fmt.Errorf("%w: %s=%q", ErrInvalidConfig, k, v)
		}
		if f.i64 != nil {
			*f.i64 = n
		} else {
			*f.i = int(n)
		}
	}
	return normalize(cfg), nil
}

// maxSegmentBytes: index positions are 32-bit, as in Kafka.
const maxSegmentBytes = math.MaxInt32

// normalize clamps a config into the ranges the implementation relies on.
func normalize(c Config) Config {
	c.SegmentBytes = min(max(c.SegmentBytes, batchHeaderSize), maxSegmentBytes)
	if c.SegmentMs <= 0 {
		c.SegmentMs = math.MaxInt64
	}
	c.IndexIntervalBytes = max(c.IndexIntervalBytes, 0)
	c.SegmentIndexBytes = max(c.SegmentIndexBytes, 4*offsetEntrySize)
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = DefaultConfig().MaxMessageBytes
	}
	// A batch is read back with one disk read, which node bounds.
	c.MaxMessageBytes = min(c.MaxMessageBytes, node.MaxReadLen)
	return c
}
