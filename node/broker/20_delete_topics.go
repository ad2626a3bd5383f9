package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// DeleteTopics: v0-v3.
//
// Topics are named (v6+ also by id; not served). A deleted topic vanishes
// from Metadata at once; the reply waits until its logs are removed, and
// the name cannot be created again before that. v4 is flexible; not served.

func init() { register(20, "DeleteTopics", 0, 3, handleDeleteTopics) }

func handleDeleteTopics(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.DeleteTopicsRequest)
	resp := req.ResponseKind().(*kmsg.DeleteTopicsResponse)
	pending := 1
	finish := func() {
		if pending--; pending == 0 {
			b.reply(r, resp)
		}
	}
	resp.Topics = make([]kmsg.DeleteTopicsResponseTopic, len(req.TopicNames))
	seen := map[string]bool{}
	for i, name := range req.TopicNames {
		st := &resp.Topics[i]
		st.Default()
		st.Topic = kmsg.StringPtr(name)
		t := b.topics[name]
		switch {
		case seen[name]:
			st.ErrorCode = kerr.InvalidRequest.Code
			continue
		case t == nil:
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			continue
		}
		seen[name] = true
		pending++
		t.whenReady(func() {
			if t.deleted {
				st.ErrorCode = kerr.UnknownTopicOrPartition.Code
				finish()
				return
			}
			b.deleteTopic(t, func(err error) {
				if err != nil {
					st.ErrorCode = kerr.KafkaStorageError.Code
				}
				finish()
			})
		})
	}
	finish()
}
