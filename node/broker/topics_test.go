package broker

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node"
)

// TestInterruptedCreateTopicsFinishes: a crash between creating a topic's
// first and last partition log must not leave a topic with fewer
// partitions than it was created with (found by the broker scenario).
func TestInterruptedCreateTopicsFinishes(t *testing.T) {
	cfg := testConfig()
	h := newHarness(t, cfg, openPartlogDir)
	c := h.connect()
	createTopic(t, h, c, "t", 3)
	// Undo partitions 1 and 2 on disk, as if the broker had died before
	// creating them.
	for _, dir := range []string{"t-1", "t-2"} {
		ents, err := h.fs.List(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if err := h.fs.Remove(dir + "/" + e.Name); err != nil {
				t.Fatal(err)
			}
		}
		if err := h.fs.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}
	// Restart on the same disk.
	h.pending, h.timers = nil, map[node.TimerName]node.Time{}
	h.m = newFactory(cfg, openPartlogDir)(h)
	h.m.Step(node.Event{Kind: node.EvStart})
	h.settle()
	c = h.connect()
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 8
	rt := kmsg.NewMetadataRequestTopic()
	name := "t"
	rt.Topic = &name
	req.Topics = append(req.Topics, rt)
	resp := h.call(c, req).(*kmsg.MetadataResponse)
	if len(resp.Topics) != 1 || len(resp.Topics[0].Partitions) != 3 {
		t.Fatalf("after restart: %d topics, partitions %+v; want t with 3", len(resp.Topics), resp.Topics)
	}
	for _, dir := range []string{"t-0", "t-1", "t-2"} {
		if _, err := h.fs.List(dir); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
	}
	// DescribeConfigs must not show herd's bookkeeping key.
	dreq := kmsg.NewPtrDescribeConfigsRequest()
	dr := kmsg.NewDescribeConfigsRequestResource()
	dr.ResourceType, dr.ResourceName = kmsg.ConfigResourceTypeTopic, "t"
	dreq.Resources = append(dreq.Resources, dr)
	dresp := h.call(c, dreq).(*kmsg.DescribeConfigsResponse)
	for _, e := range dresp.Resources[0].Configs {
		if e.Name == partitionCountKey {
			t.Fatalf("DescribeConfigs shows %s", partitionCountKey)
		}
	}
}
