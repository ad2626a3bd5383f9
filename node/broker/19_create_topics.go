package broker

import (
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreateTopics: v0-v4.
//
// NumPartitions and ReplicationFactor may be -1 (v4+: the broker defaults,
// num.partitions and default.replication.factor); a replication factor other
// than 1 is INVALID_REPLICATION_FACTOR on one broker. A manual assignment
// must give every partition this broker as its only replica. Configs become
// the topic's overrides, checked against Kafka's topic config names. v1 adds
// ValidateOnly and ErrorMessage. v5 is flexible; not served.
//
// The reply waits until every log exists, as Kafka's waits (up to its
// timeout) for the topic's metadata to propagate.

func init() { register(19, "CreateTopics", 0, 4, handleCreateTopics) }

func handleCreateTopics(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.CreateTopicsRequest)
	resp := req.ResponseKind().(*kmsg.CreateTopicsResponse)
	count := map[string]int{}
	for _, rt := range req.Topics {
		count[rt.Topic]++
	}
	pending := 1
	finish := func() {
		if pending--; pending == 0 {
			b.reply(r, resp)
		}
	}
	resp.Topics = make([]kmsg.CreateTopicsResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		st.Default()
		st.Topic = rt.Topic
		fail := func(code int16, format string, args ...any) {
			st.ErrorCode = code
			if req.Version >= 1 {
				msg := fmt.Sprintf(format, args...)
				st.ErrorMessage = &msg
			}
		}
		if count[rt.Topic] > 1 {
			fail(kerr.InvalidRequest.Code, "topic %s appears more than once in the request", rt.Topic)
			continue
		}
		n, overrides, code, msg := b.checkNewTopic(rt)
		if code != 0 {
			fail(code, "%s", msg)
			continue
		}
		st.NumPartitions, st.ReplicationFactor = n, 1
		if req.ValidateOnly {
			continue
		}
		pending++
		b.createTopic(rt.Topic, n, overrides, func(err error) {
			if err != nil {
				fail(kerr.KafkaStorageError.Code, "creating the topic's logs: %v", err)
			}
			finish()
		})
	}
	finish()
}

// checkNewTopic validates one topic of a CreateTopics request and returns
// its partition count and overrides, or a Kafka error code and message.
func (b *Broker) checkNewTopic(rt *kmsg.CreateTopicsRequestTopic) (int32, map[string]string, int16, string) {
	name := rt.Topic
	if err := validTopicName(name); err != nil {
		return 0, nil, kerr.InvalidTopicException.Code, err.Error()
	}
	if b.topics[name] != nil {
		return 0, nil, kerr.TopicAlreadyExists.Code, fmt.Sprintf("topic %s already exists", name)
	}
	if b.deleting[name] > 0 {
		return 0, nil, kerr.TopicAlreadyExists.Code, fmt.Sprintf("topic %s is marked for deletion", name)
	}
	if other := b.collidingTopic(name); other != "" {
		return 0, nil, kerr.InvalidTopicException.Code, fmt.Sprintf("topic %s collides with existing topic %s ('.' and '_' are interchangeable in metric names)", name, other)
	}
	n := rt.NumPartitions
	rf := rt.ReplicationFactor
	if len(rt.ReplicaAssignment) > 0 {
		if n != -1 || rf != -1 {
			return 0, nil, kerr.InvalidRequest.Code, "both a replica assignment and numPartitions/replicationFactor were given"
		}
		var ids []int32
		for _, a := range rt.ReplicaAssignment {
			if len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.BrokerID {
				return 0, nil, kerr.InvalidReplicaAssignment.Code, fmt.Sprintf("partition %d: replicas %v; this cluster has the single broker %d", a.Partition, a.Replicas, b.cfg.BrokerID)
			}
			ids = append(ids, a.Partition)
		}
		slices.Sort(ids)
		for i, id := range ids {
			if id != int32(i) {
				return 0, nil, kerr.InvalidReplicaAssignment.Code, "partitions in the assignment must be 0..n-1, each once"
			}
		}
		n, rf = int32(len(ids)), 1
	}
	if n == -1 {
		n = b.cfg.NumPartitions
	}
	if rf == -1 {
		rf = b.cfg.DefaultReplicationFactor
	}
	if n <= 0 {
		return 0, nil, kerr.InvalidPartitions.Code, "number of partitions must be larger than 0"
	}
	if n > maxPartitionsPerTopic {
		return 0, nil, kerr.InvalidPartitions.Code, fmt.Sprintf("herd allows at most %d partitions per topic", maxPartitionsPerTopic)
	}
	if rf != 1 {
		return 0, nil, kerr.InvalidReplicationFactor.Code, fmt.Sprintf("replication factor %d is larger than the 1 available broker", rf)
	}
	var overrides map[string]string
	for _, c := range rt.Configs {
		if err := checkTopicConfig(c.Name, c.Value); err != nil {
			return 0, nil, kerr.InvalidConfig.Code, err.Error()
		}
		if overrides == nil {
			overrides = map[string]string{}
		}
		overrides[c.Name] = *c.Value
	}
	return n, overrides, 0, ""
}
