package broker

import (
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"herd/node/broker/partlog"
)

// topic is one topic and its partitions.
type topic struct {
	name      string
	id        [16]byte
	overrides map[string]string
	// parts[i] is partition i. A partition whose log is still being
	// created has a nil log; Metadata shows the prefix that is ready.
	parts []*partition
	// creating counts partition logs being created; waiters run when it
	// drops to zero.
	creating int
	waiters  []func()
	deleted  bool
}

// partition is one topic-partition on this broker.
type partition struct {
	t   *topic
	id  int32
	log partitionLog
	// fetches are the waiting fetches that read this partition.
	fetches []*fetch
}

func (t *topic) ready() bool { return t.creating == 0 }

// whenReady runs fn once no partition of t is being created.
func (t *topic) whenReady(fn func()) {
	if t.ready() {
		fn()
		return
	}
	t.waiters = append(t.waiters, fn)
}

func (t *topic) created() {
	t.creating--
	if t.creating == 0 {
		w := t.waiters
		t.waiters = nil
		for _, fn := range w {
			fn()
		}
	}
}

// readyParts is the number of partitions, from 0, whose logs exist.
func (t *topic) readyParts() int {
	for i, p := range t.parts {
		if p.log == nil {
			return i
		}
	}
	return len(t.parts)
}

// partition returns partition id if its log exists.
func (b *Broker) partition(name string, id int32) *partition {
	t := b.topics[name]
	if t == nil || id < 0 || int(id) >= len(t.parts) || t.parts[id].log == nil {
		return nil
	}
	return t.parts[id]
}

// loadTopics rebuilds the topic table from the logs found on disk. A topic
// missing some partition (a crash while creating it) gets the missing logs
// created again.
func (b *Broker) loadTopics() {
	for _, l := range b.dir.Logs() {
		tp := l.TopicPartition()
		t := b.topics[tp.Topic]
		overrides := l.Overrides()
		want := int(tp.Partition) + 1
		if v, err := strconv.Atoi(overrides[partitionCountKey]); err == nil && v > want {
			want = v
		}
		if t == nil {
			t = &topic{name: tp.Topic, id: l.TopicID(), overrides: topicOverrides(overrides)}
			b.topics[tp.Topic] = t
		}
		// A creation cut short by a crash is finished now rather than
		// leaving a topic with fewer partitions than it was created with
		// (every log records the count its topic had when it was made).
		for want > len(t.parts) {
			t.parts = append(t.parts, &partition{t: t, id: int32(len(t.parts))})
		}
		t.parts[tp.Partition].log = l
	}
	for _, name := range sortedKeys(b.topics) {
		t := b.topics[name]
		for _, p := range t.parts {
			if p.log == nil {
				b.env.Logf("broker: topic %s lacks partition %d; creating it", name, p.id)
				b.createLog(t, p, func(error) {})
			}
		}
	}
}

// createTopic creates a topic of n partitions and calls done once every log
// exists (or one failed). The topic is visible at once, as not ready.
func (b *Broker) createTopic(name string, n int32, overrides map[string]string, done func(error)) {
	t := &topic{name: name, overrides: overrides}
	binary.BigEndian.PutUint64(t.id[:8], b.env.Rand().Uint64())
	binary.BigEndian.PutUint64(t.id[8:], b.env.Rand().Uint64())
	// A UUIDv4 like Kafka's, never the reserved all-zero id.
	t.id[6] = t.id[6]&0x0f | 0x40
	t.id[8] = t.id[8]&0x3f | 0x80
	b.topics[name] = t
	b.env.Logf("broker: creating topic %s with %d partitions", name, n)
	b.addPartitions(t, n, done)
}

// addPartitions grows t to n partitions.
func (b *Broker) addPartitions(t *topic, n int32, done func(error)) {
	var firstErr error
	pending := int(n) - len(t.parts)
	// All partitions exist before any log is created: each log records the
	// topic's full partition count (partitionCountKey).
	first := len(t.parts)
	for i := int32(first); i < n; i++ {
		t.parts = append(t.parts, &partition{t: t, id: i})
	}
	for _, p := range t.parts[first:] {
		b.createLog(t, p, func(err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if pending--; pending == 0 {
				done(firstErr)
			}
		})
	}
	if pending == 0 {
		done(nil)
	}
}

func (b *Broker) createLog(t *topic, p *partition, done func(error)) {
	t.creating++
	tp := partlog.TopicPartition{Topic: t.name, Partition: p.id}
	overrides := make(map[string]string, len(t.overrides)+1)
	for k, v := range t.overrides { // order-independent: a map copy
		overrides[k] = v
	}
	overrides[partitionCountKey] = strconv.Itoa(len(t.parts))
	b.dir.CreateLog(tp, t.id, overrides, func(l partitionLog, err error) {
		if err != nil {
			b.env.Logf("broker: creating %s-%d: %v", t.name, p.id, err)
		} else if t.deleted {
			// Deleted while being created: remove what was made.
			b.deleteLog(t.name, tp)
		} else {
			p.log = l
		}
		t.created()
		done(err)
	})
}

// deleteTopic removes t now and its logs in the background; done runs once
// every log is gone.
func (b *Broker) deleteTopic(t *topic, done func(error)) {
	delete(b.topics, t.name)
	t.deleted = true
	b.env.Logf("broker: deleting topic %s", t.name)
	var firstErr error
	pending := 0
	for _, p := range t.parts {
		for _, f := range p.fetches {
			f.partitionGone()
		}
		p.fetches = nil
		if p.log == nil {
			continue // its CreateLog callback deletes it
		}
		pending++
		tp := p.log.TopicPartition()
		p.log = nil
		b.deleteLogThen(t.name, tp, func(err error) {
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if pending--; pending == 0 {
				done(firstErr)
			}
		})
	}
	if pending == 0 {
		done(nil)
	}
}

func (b *Broker) deleteLog(name string, tp partlog.TopicPartition) {
	b.deleteLogThen(name, tp, func(error) {})
}

func (b *Broker) deleteLogThen(name string, tp partlog.TopicPartition, done func(error)) {
	b.deleting[name]++
	b.dir.DeleteLog(tp, func(err error) {
		if err != nil {
			b.env.Logf("broker: deleting %s-%d: %v", tp.Topic, tp.Partition, err)
		}
		if b.deleting[name]--; b.deleting[name] <= 0 {
			delete(b.deleting, name)
		}
		done(err)
	})
}

// validTopicName checks a topic name as Kafka's Topic.validate does.
func validTopicName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("topic name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("topic name cannot be %q", name)
	case len(name) > 249:
		return fmt.Errorf("topic name is longer than 249 characters")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("topic name %q contains %q; legal characters are ASCII letters, digits, '.', '_' and '-'", name, c)
		}
	}
	return nil
}

// collidingTopic returns an existing topic whose name differs from name
// only by '.' versus '_' (their metric names would collide, so Kafka
// refuses the second), or "".
func (b *Broker) collidingTopic(name string) string {
	if !strings.ContainsAny(name, "._") {
		return ""
	}
	norm := strings.ReplaceAll(name, ".", "_")
	for _, other := range sortedKeys(b.topics) {
		if other != name && strings.ReplaceAll(other, ".", "_") == norm {
			return other
		}
	}
	return ""
}

// topicConfigKeys are the topic-level configuration keys Kafka 2.8 knows,
// with how to check a value.
var topicConfigKeys = map[string]string{
	"cleanup.policy":                          "list",
	"compression.type":                        "string",
	"delete.retention.ms":                     "long",
	"file.delete.delay.ms":                    "long",
	"flush.messages":                          "long",
	"flush.ms":                                "long",
	"follower.replication.throttled.replicas": "list",
	"index.interval.bytes":                    "int",
	"leader.replication.throttled.replicas":   "list",
	"max.compaction.lag.ms":                   "long",
	"max.message.bytes":                       "int",
	"message.downconversion.enable":           "boolean",
	"message.format.version":                  "string",
	"message.timestamp.difference.max.ms":     "long",
	"message.timestamp.type":                  "string",
	"min.cleanable.dirty.ratio":               "double",
	"min.compaction.lag.ms":                   "long",
	"min.insync.replicas":                     "int",
	"preallocate":                             "boolean",
	"retention.bytes":                         "long",
	"retention.ms":                            "long",
	"segment.bytes":                           "int",
	"segment.index.bytes":                     "int",
	"segment.jitter.ms":                       "long",
	"segment.ms":                              "long",
	"unclean.leader.election.enable":          "boolean",
}

// checkTopicConfig validates one topic override.
func checkTopicConfig(name string, value *string) error {
	typ, ok := topicConfigKeys[name]
	if !ok {
		return fmt.Errorf("unknown topic config %s", name)
	}
	if value == nil {
		return fmt.Errorf("config %s has a null value", name)
	}
	v := *value
	var err error
	switch typ {
	case "long":
		_, err = strconv.ParseInt(v, 10, 64)
	case "int":
		_, err = strconv.ParseInt(v, 10, 32)
	case "double":
		_, err = strconv.ParseFloat(v, 64)
	case "boolean":
		_, err = parseBool(v)
	}
	if err != nil {
		return fmt.Errorf("invalid value %q for config %s (a %s)", v, name, typ)
	}
	switch name {
	case "cleanup.policy":
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "delete" {
				return fmt.Errorf("cleanup.policy=%s: herd supports delete only", v)
			}
		}
	case "message.timestamp.type":
		if v != "CreateTime" && v != "LogAppendTime" {
			return fmt.Errorf("message.timestamp.type must be CreateTime or LogAppendTime")
		}
	case "compression.type":
		// Batches are stored as the producer compressed them.
		if v != "producer" {
			return fmt.Errorf("compression.type=%s: herd supports producer only", v)
		}
	}
	return nil
}

// partitionCountKey is stored with every log's topic overrides: the topic's
// partition count when the log was created, so that recovery can finish a
// CreateTopics or CreatePartitions a crash interrupted. It is herd's own and
// never shown to clients.
const partitionCountKey = "herd.partitions"

// topicOverrides drops herd's own keys from a log's stored overrides.
func topicOverrides(stored map[string]string) map[string]string {
	out := make(map[string]string, len(stored))
	for k, v := range stored { // order-independent: a map copy
		if k != partitionCountKey {
			out[k] = v
		}
	}
	return out
}
