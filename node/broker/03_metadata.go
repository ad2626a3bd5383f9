package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Metadata: v0-v8.
//
// v0 with an empty topic list means every topic (kafka-python probes with
// it); from v1 a null list means every topic and an empty one none. v4 adds
// AllowAutoTopicCreation (earlier versions always allow it, subject to
// auto.create.topics.enable). v7 adds LeaderEpoch, always 0 on one broker.
// v8's authorized-operations fields are left at Kafka's "not requested"
// value. v9 is flexible and v10 adds topic ids; not served.
//
// The one broker leads every partition, is its only replica and its ISR.
// A topic being auto-created is reported once its logs exist, so a client
// never sees it half made.

func init() { register(3, "Metadata", 0, 8, handleMetadata) }

func handleMetadata(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.MetadataRequest)
	all := req.Topics == nil || (req.Version == 0 && len(req.Topics) == 0)
	var names []string
	if !all {
		seen := map[string]bool{}
		for _, t := range req.Topics {
			if t.Topic != nil && !seen[*t.Topic] {
				seen[*t.Topic] = true
				names = append(names, *t.Topic)
			}
		}
	}
	allowAuto := b.cfg.AutoCreateTopics && (req.Version < 4 || req.AllowAutoTopicCreation)
	b.ensureTopics(names, allowAuto, func() {
		b.reply(r, b.metadataResponse(r, req, all, names))
	})
}

// ensureTopics auto-creates the named topics that do not exist (if auto) and
// calls fn once none of the named topics is being created.
func (b *Broker) ensureTopics(names []string, auto bool, fn func()) {
	pending := 1
	release := func() {
		if pending--; pending == 0 {
			fn()
		}
	}
	for _, name := range names {
		t := b.topics[name]
		if t == nil && auto && b.deleting[name] == 0 && validTopicName(name) == nil && b.collidingTopic(name) == "" {
			b.createTopic(name, b.cfg.NumPartitions, nil, func(error) {})
			t = b.topics[name]
		}
		if t != nil && !t.ready() {
			pending++
			t.whenReady(release)
		}
	}
	release()
}

func (b *Broker) metadataResponse(r *request, req *kmsg.MetadataRequest, all bool, names []string) *kmsg.MetadataResponse {
	resp := req.ResponseKind().(*kmsg.MetadataResponse)
	adv := b.advertised(r.c.listener)
	rack := (*string)(nil)
	resp.Brokers = []kmsg.MetadataResponseBroker{{NodeID: b.cfg.BrokerID, Host: adv.Host, Port: int32(adv.Port), Rack: rack}}
	if b.cfg.ClusterID != "" {
		id := b.cfg.ClusterID
		resp.ClusterID = &id
	}
	resp.ControllerID = b.cfg.BrokerID
	if all {
		names = sortedKeys(b.topics)
	}
	for _, name := range names {
		st := kmsg.NewMetadataResponseTopic()
		st.Topic = kmsg.StringPtr(name)
		t := b.topics[name]
		switch {
		case t != nil && t.ready():
			st.TopicID = t.id
			for _, p := range t.parts[:t.readyParts()] {
				sp := kmsg.NewMetadataResponseTopicPartition()
				sp.Partition = p.id
				sp.Leader = b.cfg.BrokerID
				sp.LeaderEpoch = 0
				sp.Replicas = []int32{b.cfg.BrokerID}
				sp.ISR = []int32{b.cfg.BrokerID}
				sp.OfflineReplicas = []int32{}
				st.Partitions = append(st.Partitions, sp)
			}
			if len(st.Partitions) == 0 {
				st.ErrorCode = kerr.LeaderNotAvailable.Code
			}
		case t != nil:
			st.ErrorCode = kerr.LeaderNotAvailable.Code
		case validTopicName(name) != nil:
			st.ErrorCode = kerr.InvalidTopicException.Code
		default:
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// advertised is the address Metadata gives for listener i.
func (b *Broker) advertised(i int) Listener {
	var l Listener
	if i < len(b.cfg.Listeners) {
		l = b.cfg.Listeners[i]
	} else if len(b.cfg.Listeners) > 0 {
		l = b.cfg.Listeners[0]
	}
	for _, a := range b.cfg.Advertised {
		if a.Name == l.Name {
			l = a
			break
		}
	}
	if l.Host == "" || l.Host == "0.0.0.0" || l.Host == "::" {
		l.Host = "localhost"
	}
	return l
}
