package broker

import (
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// CreatePartitions: v0-v1.
//
// Count is the new total and must exceed the current one; a manual
// assignment must name this broker alone for each new partition. v1 only
// changes throttling semantics; v2 is flexible; not served.

func init() { register(37, "CreatePartitions", 0, 1, handleCreatePartitions) }

func handleCreatePartitions(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.CreatePartitionsRequest)
	resp := req.ResponseKind().(*kmsg.CreatePartitionsResponse)
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
	resp.Topics = make([]kmsg.CreatePartitionsResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		st.Default()
		st.Topic = rt.Topic
		fail := func(code int16, format string, args ...any) {
			st.ErrorCode = code
			msg := fmt.Sprintf(format, args...)
			st.ErrorMessage = &msg
		}
		t := b.topics[rt.Topic]
		switch {
		case count[rt.Topic] > 1:
			fail(kerr.InvalidRequest.Code, "topic %s appears more than once in the request", rt.Topic)
			continue
		case t == nil:
			fail(kerr.UnknownTopicOrPartition.Code, "topic %s does not exist", rt.Topic)
			continue
		case !t.ready():
			fail(kerr.ReassignmentInProgress.Code, "topic %s is still being created or grown", rt.Topic)
			continue
		case rt.Count <= int32(len(t.parts)):
			fail(kerr.InvalidPartitions.Code, "topic %s has %d partitions; the new count %d must be larger", rt.Topic, len(t.parts), rt.Count)
			continue
		case rt.Count > maxPartitionsPerTopic:
			fail(kerr.InvalidPartitions.Code, "herd allows at most %d partitions per topic", maxPartitionsPerTopic)
			continue
		case rt.Assignment != nil && len(rt.Assignment) != int(rt.Count)-len(t.parts):
			fail(kerr.InvalidReplicaAssignment.Code, "the assignment must list the %d new partitions", int(rt.Count)-len(t.parts))
			continue
		}
		bad := false
		for _, a := range rt.Assignment {
			if len(a.Replicas) != 1 || a.Replicas[0] != b.cfg.BrokerID {
				fail(kerr.InvalidReplicaAssignment.Code, "replicas %v; this cluster has the single broker %d", a.Replicas, b.cfg.BrokerID)
				bad = true
				break
			}
		}
		if bad || req.ValidateOnly {
			continue
		}
		pending++
		b.addPartitions(t, rt.Count, func(err error) {
			if err != nil {
				fail(kerr.KafkaStorageError.Code, "creating the new logs: %v", err)
			}
			finish()
		})
	}
	finish()
}
