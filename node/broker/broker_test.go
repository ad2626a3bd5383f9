package broker

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node"
)

// stores are the storage backends the core's tests run on.
var stores = []struct {
	name string
	open openDirFunc
}{
	{"mem", openMemDir},
	{"partlog", openPartlogDir},
}

func forEachStore(t *testing.T, fn func(t *testing.T, open openDirFunc)) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) { fn(t, s.open) })
	}
}

func createTopic(t *testing.T, h *harness, c node.ConnID, name string, parts int32) {
	t.Helper()
	req := kmsg.NewPtrCreateTopicsRequest()
	req.Version = 4
	rt := kmsg.NewCreateTopicsRequestTopic()
	rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, parts, 1
	req.Topics = append(req.Topics, rt)
	resp := h.call(c, req).(*kmsg.CreateTopicsResponse)
	if code := resp.Topics[0].ErrorCode; code != 0 {
		t.Fatalf("create %s: %v", name, kerr.ErrorForCode(code))
	}
}

func produceReq(acks int16, topic string, part int32, recs []byte) *kmsg.ProduceRequest {
	req := kmsg.NewPtrProduceRequest()
	req.Version = 8
	req.Acks = acks
	req.TimeoutMillis = 1000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Partition, rp.Records = part, recs
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func fetchReq(topic string, part int32, offset int64, minBytes, waitMs int32) *kmsg.FetchRequest {
	req := kmsg.NewPtrFetchRequest()
	req.Version = 11
	req.ReplicaID = -1
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes = waitMs, minBytes, 50<<20
	req.SessionEpoch = -1
	rt := kmsg.NewFetchRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewFetchRequestTopicPartition()
	rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, rp.CurrentLeaderEpoch = part, offset, 1<<20, -1
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	return req
}

func TestApiVersions(t *testing.T) {
	h := newHarness(t, testConfig(), openMemDir)
	c := h.connect()
	for _, v := range []int16{0, 1, 2, 3} {
		req := kmsg.NewPtrApiVersionsRequest()
		req.Version = v
		req.ClientSoftwareName, req.ClientSoftwareVersion = "test", "1.0"
		resp := h.call(c, req).(*kmsg.ApiVersionsResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("v%d: %v", v, kerr.ErrorForCode(resp.ErrorCode))
		}
		got := map[int16][2]int16{}
		for _, k := range resp.ApiKeys {
			got[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
		}
		want := map[int16][2]int16{0: {3, 8}, 1: {4, 11}, 2: {0, 5}, 3: {0, 8}, 18: {0, 3}, 19: {0, 4}, 20: {0, 3}, 32: {0, 3}, 37: {0, 1}}
		for k, r := range want { // order-independent: every entry is checked
			if got[k] != r {
				t.Errorf("v%d: key %d advertised %v, want %v", v, k, got[k], r)
			}
		}
		if len(got) != len(want) {
			t.Errorf("v%d: advertised %d keys, want %d", v, len(got), len(want))
		}
	}
	// Too high: a v0 answer, UNSUPPORTED_VERSION, only key 18 (KIP-511).
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 5
	req.ClientSoftwareName, req.ClientSoftwareVersion = "kgo", "1.0"
	f, corr := h.frame(req)
	h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: f})
	h.settle()
	out := h.out[c]
	h.out[c] = nil
	v0 := kmsg.NewPtrApiVersionsRequest()
	v0.Version = 0
	h.out[c] = out
	rs := h.replies(c, v0)
	if len(rs) != 1 || rs[0].corr != corr {
		t.Fatalf("replies %v", rs)
	}
	resp := rs[0].resp.(*kmsg.ApiVersionsResponse)
	if resp.ErrorCode != kerr.UnsupportedVersion.Code || len(resp.ApiKeys) != 1 || resp.ApiKeys[0].ApiKey != 18 || resp.ApiKeys[0].MaxVersion != 3 {
		t.Fatalf("too-high ApiVersions: %+v", resp)
	}
	// A bad software name is INVALID_REQUEST.
	req = kmsg.NewPtrApiVersionsRequest()
	req.Version = 3
	req.ClientSoftwareName, req.ClientSoftwareVersion = "-bad", "1"
	if r := h.call(c, req).(*kmsg.ApiVersionsResponse); r.ErrorCode != kerr.InvalidRequest.Code {
		t.Fatalf("bad software name: %v", kerr.ErrorForCode(r.ErrorCode))
	}
}

func TestUnknownKeyAndBadVersionClose(t *testing.T) {
	h := newHarness(t, testConfig(), openMemDir)
	c := h.connect()
	req := kmsg.NewPtrListGroupsRequest() // key 16: not served
	h.send(c, req)
	if !h.closed[c] {
		t.Fatal("unknown key did not close the connection")
	}
	c = h.connect()
	p := produceReq(1, "t", 0, batch(1, "x"))
	p.Version = 13
	h.send(c, p)
	if !h.closed[c] {
		t.Fatal("Produce v13 did not close the connection")
	}
}

func TestRequestSizeLimit(t *testing.T) {
	cfg := testConfig()
	cfg.SocketRequestMaxBytes = 1000
	h := newHarness(t, cfg, openMemDir)
	c := h.connect()
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], 1001)
	h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: hdr[:]})
	if !h.closed[c] {
		t.Fatal("oversized request did not close the connection")
	}
}

func TestMetadataAutoCreate(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		req := kmsg.NewPtrMetadataRequest()
		req.Version = 8
		req.AllowAutoTopicCreation = true
		rt := kmsg.NewMetadataRequestTopic()
		rt.Topic = kmsg.StringPtr("auto")
		bad := kmsg.NewMetadataRequestTopic()
		bad.Topic = kmsg.StringPtr("bad/name")
		req.Topics = append(req.Topics, rt, bad)
		resp := h.call(c, req).(*kmsg.MetadataResponse)
		if len(resp.Brokers) != 1 || resp.Brokers[0].Host != "127.0.0.1" || resp.Brokers[0].Port != 9092 {
			t.Fatalf("brokers %+v", resp.Brokers)
		}
		if len(resp.Topics) != 2 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) != 1 {
			t.Fatalf("auto topic: %+v", resp.Topics)
		}
		if resp.Topics[1].ErrorCode != kerr.InvalidTopicException.Code {
			t.Fatalf("bad name: %v", kerr.ErrorForCode(resp.Topics[1].ErrorCode))
		}
		// v0 with no topics lists all; v4 without auto-create does not create.
		v0 := kmsg.NewPtrMetadataRequest()
		v0.Version = 0
		v0.Topics = []kmsg.MetadataRequestTopic{}
		if r := h.call(c, v0).(*kmsg.MetadataResponse); len(r.Topics) != 1 || *r.Topics[0].Topic != "auto" {
			t.Fatalf("v0 all topics: %+v", r.Topics)
		}
		noAuto := kmsg.NewPtrMetadataRequest()
		noAuto.Version = 4
		noAuto.AllowAutoTopicCreation = false
		noAuto.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("other")}}
		if r := h.call(c, noAuto).(*kmsg.MetadataResponse); r.Topics[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("no auto-create: %v", kerr.ErrorForCode(r.Topics[0].ErrorCode))
		}
	})
}

func TestCreateTopicsValidation(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		req := kmsg.NewPtrCreateTopicsRequest()
		req.Version = 4
		add := func(name string, parts int32, rf int16, cfgs ...string) {
			rt := kmsg.NewCreateTopicsRequestTopic()
			rt.Topic, rt.NumPartitions, rt.ReplicationFactor = name, parts, rf
			for i := 0; i < len(cfgs); i += 2 {
				rt.Configs = append(rt.Configs, kmsg.CreateTopicsRequestTopicConfig{Name: cfgs[i], Value: kmsg.StringPtr(cfgs[i+1])})
			}
			req.Topics = append(req.Topics, rt)
		}
		add("ok", 3, 1, "retention.ms", "1000")
		add("defaults", -1, -1)
		add("rf3", 1, 3)
		add("bad name", 1, 1)
		add("zero", 0, 1)
		add("badcfg", 1, 1, "no.such.config", "1")
		add("badval", 1, 1, "retention.ms", "soon")
		add("dup", 1, 1)
		add("dup", 1, 1)
		add(strings.Repeat("x", 250), 1, 1)
		resp := h.call(c, req).(*kmsg.CreateTopicsResponse)
		want := []int16{0, 0, kerr.InvalidReplicationFactor.Code, kerr.InvalidTopicException.Code, kerr.InvalidPartitions.Code,
			kerr.InvalidConfig.Code, kerr.InvalidConfig.Code, kerr.InvalidRequest.Code, kerr.InvalidRequest.Code, kerr.InvalidTopicException.Code}
		for i, st := range resp.Topics {
			if st.ErrorCode != want[i] {
				t.Errorf("%s: %v, want %v", st.Topic, kerr.ErrorForCode(st.ErrorCode), kerr.ErrorForCode(want[i]))
			}
		}
		// Again: exists. And a '.'/'_' collision.
		req = kmsg.NewPtrCreateTopicsRequest()
		req.Version = 4
		add("ok", 1, 1)
		add("a.b", 1, 1)
		add("a_b", 1, 1)
		resp = h.call(c, req).(*kmsg.CreateTopicsResponse)
		if resp.Topics[0].ErrorCode != kerr.TopicAlreadyExists.Code || resp.Topics[1].ErrorCode != 0 || resp.Topics[2].ErrorCode != kerr.InvalidTopicException.Code {
			t.Fatalf("second create: %+v", resp.Topics)
		}
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 1
		mr := h.call(c, md).(*kmsg.MetadataResponse)
		var names []string
		for _, t := range mr.Topics {
			names = append(names, *t.Topic+":"+string(rune('0'+len(t.Partitions))))
		}
		if got := strings.Join(names, ","); got != "a.b:1,defaults:1,ok:3" {
			t.Fatalf("topics %s", got)
		}
	})
}

func TestProduceFetchInOrder(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 2)

		// Pipeline: two produces, a metadata and a produce to an unknown
		// partition, sent together. Replies come in request order.
		p1 := produceReq(1, "t", 0, batch(1000, "a", "b"))
		p2 := produceReq(-1, "t", 0, batch(2000, "c"))
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 8
		p3 := produceReq(1, "t", 7, batch(1, "x"))
		var stream []byte
		var corrs []int32
		for _, r := range []kmsg.Request{p1, p2, md, p3} {
			f, corr := h.frame(r)
			stream = append(stream, f...)
			corrs = append(corrs, corr)
		}
		// Deliver in awkward pieces.
		for len(stream) > 0 {
			n := min(7, len(stream))
			h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: slices.Clone(stream[:n])})
			stream = stream[n:]
		}
		h.settle()
		rs := h.replies(c, p1, p2, md, p3)
		if len(rs) != 4 {
			t.Fatalf("%d replies", len(rs))
		}
		for i, r := range rs {
			if r.corr != corrs[i] {
				t.Fatalf("reply %d has corr %d, want %d", i, r.corr, corrs[i])
			}
		}
		if pr := rs[0].resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]; pr.ErrorCode != 0 || pr.BaseOffset != 0 {
			t.Fatalf("p1: %+v", pr)
		}
		if pr := rs[1].resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]; pr.ErrorCode != 0 || pr.BaseOffset != 2 {
			t.Fatalf("p2: %+v", pr)
		}
		if pr := rs[3].resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0]; pr.ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("p3: %+v", pr)
		}

		// acks=0: no reply at all; the next request's reply is the next frame.
		h.send(c, produceReq(0, "t", 1, batch(3000, "z")))
		h.settle()
		fr := h.call(c, fetchReq("t", 0, 0, 1, 0)).(*kmsg.FetchResponse)
		fp := fr.Topics[0].Partitions[0]
		if fp.ErrorCode != 0 || fp.HighWatermark != 3 || fr.SessionID != 0 {
			t.Fatalf("fetch: %+v", fp)
		}
		if want := append(withBase(batch(1000, "a", "b"), 0), withBase(batch(2000, "c"), 2)...); !bytes.Equal(fp.RecordBatches, want) {
			t.Fatalf("fetched %x\nwant    %x", fp.RecordBatches, want)
		}
		fr = h.call(c, fetchReq("t", 1, 0, 1, 0)).(*kmsg.FetchResponse)
		if fp := fr.Topics[0].Partitions[0]; fp.HighWatermark != 1 {
			t.Fatalf("acks=0 record not stored: %+v", fp)
		}
		// Out of range.
		fr = h.call(c, fetchReq("t", 0, 99, 1, 0)).(*kmsg.FetchResponse)
		if fp := fr.Topics[0].Partitions[0]; fp.ErrorCode != kerr.OffsetOutOfRange.Code {
			t.Fatalf("offset 99: %v", kerr.ErrorForCode(fp.ErrorCode))
		}
		// acks=0 to a missing partition closes the connection.
		h.send(c, produceReq(0, "t", 9, batch(1, "z")))
		h.settle()
		if !h.closed[c] {
			t.Fatal("failed acks=0 produce did not close the connection")
		}
	})
}

func withBase(b []byte, base int64) []byte {
	binary.BigEndian.PutUint64(b, uint64(base))
	return b
}

func TestFetchLongPoll(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 1)
		consumer := h.connect()
		f := fetchReq("t", 0, 0, 1, 5000)
		corr := h.send(consumer, f)
		h.settle()
		h.advance(time.Second)
		if len(h.out[consumer]) != 0 {
			t.Fatal("fetch answered before data or its deadline")
		}
		// A metadata request behind the waiting fetch waits too.
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 1
		h.send(consumer, md)
		h.settle()
		if len(h.out[consumer]) != 0 {
			t.Fatal("a later request overtook a waiting fetch")
		}
		h.call(c, produceReq(1, "t", 0, batch(5, "hello")))
		rs := h.replies(consumer, f, md)
		if len(rs) != 2 || rs[0].corr != corr {
			t.Fatalf("replies after produce: %d", len(rs))
		}
		if fp := rs[0].resp.(*kmsg.FetchResponse).Topics[0].Partitions[0]; fp.HighWatermark != 1 || len(fp.RecordBatches) == 0 {
			t.Fatalf("woken fetch: %+v", fp)
		}
		// No data: answered empty at the deadline, not before.
		f = fetchReq("t", 0, 1, 1, 500)
		h.send(consumer, f)
		h.settle()
		h.advance(499 * time.Millisecond)
		if len(h.out[consumer]) != 0 {
			t.Fatal("answered early")
		}
		h.advance(2 * time.Millisecond)
		rs = h.replies(consumer, f)
		if len(rs) != 1 || len(rs[0].resp.(*kmsg.FetchResponse).Topics[0].Partitions[0].RecordBatches) != 0 {
			t.Fatalf("expired fetch: %+v", rs)
		}
		// Deleting the topic answers a waiting fetch.
		f = fetchReq("t", 0, 1, 1, 60000)
		h.send(consumer, f)
		h.settle()
		del := kmsg.NewPtrDeleteTopicsRequest()
		del.Version = 3
		del.TopicNames = []string{"t"}
		if r := h.call(c, del).(*kmsg.DeleteTopicsResponse); r.Topics[0].ErrorCode != 0 {
			t.Fatalf("delete: %v", kerr.ErrorForCode(r.Topics[0].ErrorCode))
		}
		rs = h.replies(consumer, f)
		if len(rs) != 1 || rs[0].resp.(*kmsg.FetchResponse).Topics[0].Partitions[0].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("fetch on deleted topic: %+v", rs)
		}
	})
}

func TestFetchMaxBytes(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 2)
		big := strings.Repeat("x", 1000)
		for i := 0; i < 3; i++ {
			h.call(c, produceReq(1, "t", 0, batch(1, big)))
			h.call(c, produceReq(1, "t", 1, batch(1, big)))
		}
		one := len(batch(1, big))
		f := fetchReq("t", 0, 0, 1, 0)
		f.Topics[0].Partitions[0].PartitionMaxBytes = 10 // smaller than a batch
		rp := f.Topics[0].Partitions[0]
		rp.Partition = 1
		rp.PartitionMaxBytes = 1 << 20
		f.Topics[0].Partitions = append(f.Topics[0].Partitions, rp)
		f.MaxBytes = int32(one + one/2)
		fr := h.call(c, f).(*kmsg.FetchResponse)
		p0, p1 := fr.Topics[0].Partitions[0], fr.Topics[0].Partitions[1]
		// KIP-74: the first partition returns one whole batch despite its
		// limit; the second gets what fits in the rest of MaxBytes: none.
		if len(p0.RecordBatches) != one || len(p1.RecordBatches) != 0 {
			t.Fatalf("got %d and %d bytes, want %d and 0", len(p0.RecordBatches), len(p1.RecordBatches), one)
		}
		f.MaxBytes = int32(3 * one)
		fr = h.call(c, f).(*kmsg.FetchResponse)
		if p1 := fr.Topics[0].Partitions[1]; len(p1.RecordBatches) != 2*one {
			t.Fatalf("second partition got %d bytes, want %d", len(p1.RecordBatches), 2*one)
		}
	})
}

func TestWholeBatches(t *testing.T) {
	a, b := batch(1, "aaaa"), batch(2, "bb")
	recs := append(slices.Clone(a), b...)
	for _, tc := range []struct {
		limit int
		one   bool
		want  int
	}{
		{0, false, 0}, {0, true, len(a)}, {len(a), false, len(a)}, {len(a) + len(b) - 1, false, len(a)},
		{len(recs), false, len(recs)}, {1 << 20, true, len(recs)},
	} {
		if got := len(wholeBatches(recs, tc.limit, tc.one)); got != tc.want {
			t.Errorf("limit %d one %v: %d bytes, want %d", tc.limit, tc.one, got, tc.want)
		}
	}
	if got := len(wholeBatches(recs[:len(recs)-1], 1<<20, true)); got != len(a) {
		t.Errorf("torn tail: %d", got)
	}
}

func TestListOffsets(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 1)
		h.call(c, produceReq(1, "t", 0, batch(1000, "a", "b")))
		h.call(c, produceReq(1, "t", 0, batch(2000, "c")))
		for _, tc := range []struct {
			ts, want int64
		}{{-1, 3}, {-2, 0}, {1500, 2}, {2000, 2}, {3000, -1}} {
			for _, v := range []int16{0, 1, 5} {
				req := kmsg.NewPtrListOffsetsRequest()
				req.Version = v
				req.ReplicaID = -1
				rt := kmsg.NewListOffsetsRequestTopic()
				rt.Topic = "t"
				rp := kmsg.NewListOffsetsRequestTopicPartition()
				rp.Timestamp, rp.MaxNumOffsets, rp.CurrentLeaderEpoch = tc.ts, 1, -1
				rt.Partitions = append(rt.Partitions, rp)
				req.Topics = append(req.Topics, rt)
				sp := h.call(c, req).(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0]
				got := sp.Offset
				if v == 0 {
					got = -1
					if len(sp.OldStyleOffsets) > 0 {
						got = sp.OldStyleOffsets[0]
					}
				}
				if sp.ErrorCode != 0 || got != tc.want {
					t.Errorf("v%d ts %d: offset %d err %v, want %d", v, tc.ts, got, kerr.ErrorForCode(sp.ErrorCode), tc.want)
				}
			}
		}
	})
}

func TestCreatePartitionsAndDescribeConfigs(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		cfg := testConfig()
		cfg.Props["log.retention.hours"] = "24"
		cfg.Log.RetentionMs = 24 * 3600 * 1000
		h := newHarness(t, cfg, open)
		c := h.connect()
		cr := kmsg.NewPtrCreateTopicsRequest()
		cr.Version = 4
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = "t", 1, 1
		rt.Configs = []kmsg.CreateTopicsRequestTopicConfig{{Name: "segment.bytes", Value: kmsg.StringPtr("1048576")}}
		cr.Topics = append(cr.Topics, rt)
		h.call(c, cr)

		cp := kmsg.NewPtrCreatePartitionsRequest()
		cp.Version = 1
		cp.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: "t", Count: 4}, {Topic: "nope", Count: 2}}
		r := h.call(c, cp).(*kmsg.CreatePartitionsResponse)
		if r.Topics[0].ErrorCode != 0 || r.Topics[1].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("create partitions: %+v", r.Topics)
		}
		cp.Topics = cp.Topics[:1]
		if r := h.call(c, cp).(*kmsg.CreatePartitionsResponse); r.Topics[0].ErrorCode != kerr.InvalidPartitions.Code {
			t.Fatalf("same count again: %v", kerr.ErrorForCode(r.Topics[0].ErrorCode))
		}
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 8
		md.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("t")}}
		if mr := h.call(c, md).(*kmsg.MetadataResponse); len(mr.Topics[0].Partitions) != 4 {
			t.Fatalf("partitions after grow: %d", len(mr.Topics[0].Partitions))
		}

		dc := kmsg.NewPtrDescribeConfigsRequest()
		dc.Version = 3
		dc.IncludeSynonyms = true
		dc.Resources = []kmsg.DescribeConfigsRequestResource{
			{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "t", ConfigNames: []string{"segment.bytes", "retention.ms", "cleanup.policy"}},
			{ResourceType: kmsg.ConfigResourceTypeBroker, ResourceName: "0"},
			{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "nope"},
		}
		dr := h.call(c, dc).(*kmsg.DescribeConfigsResponse)
		got := map[string]string{}
		for _, rc := range dr.Resources[0].Configs {
			got[rc.Name] = *rc.Value + "/" + rc.Source.String()
		}
		wantSeg := "1048576/DYNAMIC_TOPIC_CONFIG"
		if _, mem := h.m.(*Broker).dir.(*memDir); mem {
			wantSeg = "1073741824/DYNAMIC_TOPIC_CONFIG" // memLog ignores overrides
		}
		if got["segment.bytes"] != wantSeg ||
			got["retention.ms"] != "86400000/STATIC_BROKER_CONFIG" || got["cleanup.policy"] != "delete/DEFAULT_CONFIG" {
			t.Fatalf("topic configs: %v", got)
		}
		if len(dr.Resources[1].Configs) == 0 || dr.Resources[1].ErrorCode != 0 {
			t.Fatalf("broker configs: %+v", dr.Resources[1])
		}
		if dr.Resources[2].ErrorCode != kerr.UnknownTopicOrPartition.Code {
			t.Fatalf("unknown topic: %v", kerr.ErrorForCode(dr.Resources[2].ErrorCode))
		}
	})
}

// Requests beyond maxInFlight wait undecoded, and are served as replies
// drain.
func TestInFlightBound(t *testing.T) {
	h := newHarness(t, testConfig(), openMemDir)
	c := h.connect()
	createTopic(t, h, c, "t", 1)
	var stream []byte
	var reqs []kmsg.Request
	for i := 0; i < 3*maxInFlight; i++ {
		f := fetchReq("t", 0, 0, 1, 100)
		fr, _ := h.frame(f)
		stream = append(stream, fr...)
		reqs = append(reqs, f)
	}
	h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: stream})
	h.settle()
	b := h.m.(*Broker)
	if n := len(b.conns[c].queue); n != maxInFlight {
		t.Fatalf("%d requests in flight, want %d", n, maxInFlight)
	}
	h.advance(time.Second)
	if rs := h.replies(c, reqs...); len(rs) != 3*maxInFlight {
		t.Fatalf("%d replies, want %d", len(rs), 3*maxInFlight)
	}
}

// TestFetchFirstBatchBehindEmptyPartition: KIP-74's allowance goes to the
// first partition that has data, even when an earlier one in the request is
// empty and later ones were read without it (without the re-read the client
// would get the same empty answer forever).
func TestFetchFirstBatchBehindEmptyPartition(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 4)
		big := strings.Repeat("y", 4000)
		for p := int32(1); p < 4; p++ {
			h.call(c, produceReq(1, "t", p, batch(1, big)))
		}
		one := len(batch(1, big))
		f := fetchReq("t", 0, 0, 1, 0)
		for p := int32(1); p < 4; p++ {
			rp := f.Topics[0].Partitions[0]
			rp.Partition = p
			f.Topics[0].Partitions = append(f.Topics[0].Partitions, rp)
		}
		for i := range f.Topics[0].Partitions {
			f.Topics[0].Partitions[i].PartitionMaxBytes = 100 // every batch is larger
		}
		fr := h.call(c, f).(*kmsg.FetchResponse)
		ps := fr.Topics[0].Partitions
		if len(ps[0].RecordBatches) != 0 || len(ps[1].RecordBatches) != one || len(ps[2].RecordBatches) != 0 || len(ps[3].RecordBatches) != 0 {
			t.Fatalf("got %d/%d/%d/%d bytes, want 0/%d/0/0", len(ps[0].RecordBatches), len(ps[1].RecordBatches), len(ps[2].RecordBatches), len(ps[3].RecordBatches), one)
		}
	})
}

// A produce request delivered as one EvReceived buffer of its own goes back
// to the shell (Env.Recycle) once its writes completed, exactly once; a
// buffer that holds more than the request, or a request copied together
// from pieces, does not; nor does one whose write failed (its log deleted
// first: the write may still be queued with the batch).
func TestProduceRecyclesItsFrame(t *testing.T) {
	forEachStore(t, func(t *testing.T, open openDirFunc) {
		h := newHarness(t, testConfig(), open)
		c := h.connect()
		createTopic(t, h, c, "t", 1)
		h.recycled = nil
		own, _ := h.frame(produceReq(1, "t", 0, batch(1, "a")))
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: own})
		if len(h.recycled) != 0 {
			t.Fatal("recycled before the write completed")
		}
		h.settle()
		if len(h.recycled) != 1 || &h.recycled[0][0] != &own[0] || len(h.recycled[0]) != len(own) {
			t.Fatalf("recycled %d buffers, want the request's own", len(h.recycled))
		}
		h.replies(c, produceReq(1, "t", 0, nil))

		// Two requests in one buffer; one request in two pieces.
		h.recycled = nil
		f1, _ := h.frame(produceReq(1, "t", 0, batch(1, "b")))
		f2, _ := h.frame(produceReq(1, "t", 0, batch(1, "c")))
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: append(f1, f2...)})
		f3, _ := h.frame(produceReq(1, "t", 0, batch(1, "d")))
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: slices.Clone(f3[:9])})
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: slices.Clone(f3[9:])})
		h.settle()
		if rs := h.replies(c, produceReq(1, "t", 0, nil), produceReq(1, "t", 0, nil), produceReq(1, "t", 0, nil)); len(rs) != 3 {
			t.Fatalf("%d replies, want 3", len(rs))
		}
		if len(h.recycled) != 0 {
			t.Fatalf("recycled %d buffers that held more or less than one request", len(h.recycled))
		}

		// The log deleted while the write waits.
		own, _ = h.frame(produceReq(1, "t", 0, batch(1, "e")))
		h.m.Step(node.Event{Kind: node.EvReceived, Conn: c, Data: own})
		del := kmsg.NewPtrDeleteTopicsRequest()
		del.Version = 3
		del.TopicNames = []string{"t"}
		h.send(c, del)
		h.settle()
		rs := h.replies(c, produceReq(1, "t", 0, nil), del)
		if len(rs) != 2 {
			t.Fatalf("%d replies, want 2", len(rs))
		}
		code := rs[0].resp.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode
		switch {
		case code != 0 && len(h.recycled) != 0:
			t.Fatal("recycled the buffer of a produce whose log went away")
		case code == 0 && len(h.recycled) != 1:
			// The in-memory store completes appends before the deletion.
			t.Fatalf("recycled %d buffers of a produce that succeeded", len(h.recycled))
		case code == 0 && strings.HasSuffix(t.Name(), "/partlog"):
			t.Fatal("the produce completed before its log was deleted: the failed write is not tested")
		}
	})
}

// A fetch's read buffers go back to the shell: one that the reply sends
// from (a record set of at least copyRecordsBelow bytes) by RecycleSent
// after the reply was sent, one copied into the reply by Recycle. The
// harness overwrites recycled buffers, so a buffer recycled before its
// bytes were sent shows as garbage in the reply.
func TestFetchRecyclesItsReads(t *testing.T) {
	h := newHarness(t, testConfig(), openPartlogDir)
	c := h.connect()
	createTopic(t, h, c, "t", 1)
	big := strings.Repeat("x", copyRecordsBelow)
	h.call(c, produceReq(1, "t", 0, batch(1, big, big)))
	h.call(c, produceReq(1, "t", 0, batch(2, "small")))

	h.recycled, h.recycledSent = nil, nil
	fr := h.call(c, fetchReq("t", 0, 0, 1, 0)).(*kmsg.FetchResponse)
	p := fr.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || p.HighWatermark != 3 {
		t.Fatalf("fetch: error %d, high watermark %d", p.ErrorCode, p.HighWatermark)
	}
	var values []string
	for _, rb := range splitBatches(t, p.RecordBatches) {
		for _, r := range rb {
			values = append(values, string(r.Value))
		}
	}
	if len(values) != 3 || values[0] != big || values[1] != big || values[2] != "small" {
		t.Fatalf("fetched %d records, not the ones produced", len(values))
	}
	if len(h.recycledSent) != 1 || len(h.recycled) != 0 {
		t.Fatalf("recycled %d buffers after the send and %d before, want 1 and 0", len(h.recycledSent), len(h.recycled))
	}

	h.recycled, h.recycledSent = nil, nil
	fr = h.call(c, fetchReq("t", 0, 2, 1, 0)).(*kmsg.FetchResponse)
	p = fr.Topics[0].Partitions[0]
	if rbs := splitBatches(t, p.RecordBatches); len(rbs) != 1 || len(rbs[0]) != 1 || string(rbs[0][0].Value) != "small" {
		t.Fatal("the small fetch did not return the small record")
	}
	if len(h.recycledSent) != 0 || len(h.recycled) != 1 {
		t.Fatalf("small fetch: recycled %d buffers after the send and %d before, want 0 and 1", len(h.recycledSent), len(h.recycled))
	}
}

// splitBatches decodes a record set of uncompressed v2 batches.
func splitBatches(t *testing.T, recs []byte) [][]kmsg.Record {
	t.Helper()
	var out [][]kmsg.Record
	for len(recs) > 0 {
		if len(recs) < 12 {
			t.Fatalf("%d bytes of a batch header left", len(recs))
		}
		n := 12 + int(int32(binary.BigEndian.Uint32(recs[8:])))
		if n < 61 || n > len(recs) {
			t.Fatalf("batch length %d with %d bytes left", n, len(recs))
		}
		var b kmsg.RecordBatch
		if err := b.ReadFrom(recs[:n]); err != nil {
			t.Fatal(err)
		}
		if crc32.Checksum(recs[21:n], crc32.MakeTable(crc32.Castagnoli)) != uint32(b.CRC) {
			t.Fatal("batch CRC does not match")
		}
		rs := make([]kmsg.Record, b.NumRecords)
		rest := b.Records
		for i := range rs {
			if err := rs[i].ReadFrom(rest); err != nil {
				t.Fatal(err)
			}
			l, k := binary.Varint(rest)
			rest = rest[k+int(l):]
		}
		out = append(out, rs)
		recs = recs[n:]
	}
	return out
}

// fetch.max.bytes caps a Fetch response whatever its MaxBytes asks for:
// a 100 MiB response outgrew the shell's send queue bound and reset the
// connection on every try.
func TestFetchMaxBytesConfig(t *testing.T) {
	cfg := testConfig()
	cfg.FetchMaxBytes = 5000
	h := newHarness(t, cfg, openPartlogDir)
	c := h.connect()
	createTopic(t, h, c, "t", 1)
	v := strings.Repeat("v", 2000)
	for i := range 4 {
		h.call(c, produceReq(1, "t", 0, batch(int64(i), v)))
	}
	f := fetchReq("t", 0, 0, 1, 0) // MaxBytes 50 MiB, PartitionMaxBytes 1 MiB
	p := h.call(c, f).(*kmsg.FetchResponse).Topics[0].Partitions[0]
	if n := len(splitBatches(t, p.RecordBatches)); n != 2 || len(p.RecordBatches) > 5000 {
		t.Fatalf("%d batches, %d bytes: want the 2 that fit in fetch.max.bytes 5000", n, len(p.RecordBatches))
	}
}
