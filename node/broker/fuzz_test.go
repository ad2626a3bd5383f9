package broker

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node"
)

// quietT keeps a fuzzing harness from logging every closed connection.
type quietT struct{ testing.TB }

func (quietT) Logf(string, ...any) {}

// FuzzRequest feeds arbitrary request bodies (framed) to a broker holding a
// topic with data: it must answer or close the connection, never panic.
// Seeds are valid requests of every served key, which the fuzzer mutates.
func FuzzRequest(f *testing.F) {
	seed := newHarness(f, testConfig(), openMemDir)
	add := func(r kmsg.Request) {
		frame, _ := seed.frame(r)
		f.Add(frame[4:])
	}
	av := kmsg.NewPtrApiVersionsRequest()
	av.Version, av.ClientSoftwareName, av.ClientSoftwareVersion = 3, "a", "1"
	add(av)
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 8
	md.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("t")}}
	add(md)
	add(produceReq(1, "t", 0, batch(1, "a", "b")))
	add(fetchReq("t", 0, 0, 1, 10))
	lo := kmsg.NewPtrListOffsetsRequest()
	lo.Version = 5
	lo.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "t", Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Timestamp: 5}}}}
	add(lo)
	ct := kmsg.NewPtrCreateTopicsRequest()
	ct.Version = 4
	ct.Topics = []kmsg.CreateTopicsRequestTopic{{Topic: "u", NumPartitions: 2, ReplicationFactor: 1}}
	add(ct)
	dt := kmsg.NewPtrDeleteTopicsRequest()
	dt.Version = 3
	dt.TopicNames = []string{"t"}
	add(dt)
	cp := kmsg.NewPtrCreatePartitionsRequest()
	cp.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: "t", Count: 3}}
	add(cp)
	dc := kmsg.NewPtrDescribeConfigsRequest()
	dc.Version = 3
	dc.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t"}}
	add(dc)

	f.Fuzz(func(t *testing.T, body []byte) {
		h := newHarness(quietT{t}, testConfig(), openMemDir)
		c := h.connect()
		createTopic(t, h, c, "t", 1)
		h.call(c, produceReq(1, "t", 0, batch(1, "x")))
		frame := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		frame = append(frame, body...)
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: frame})
		h.settle()
		h.advance(time.Minute)
		// The same bytes as a raw stream on a fresh connection.
		c2 := h.connect()
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c2, Data: body})
		h.settle()
		h.advance(time.Minute)
	})
}
