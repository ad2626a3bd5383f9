package kafka

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"herd/compat/kafka/broker"
)

// genRecords makes perPart records for each of partitions partitions,
// partition by partition, covering null keys, null values (tombstones),
// empty values, binary bytes, a 15 KB value and headers (several, repeated
// keys, empty values), within what producer c can express. With ts, every
// other record carries an explicit timestamp (base + its index), the
// others take the producer's clock.
func genRecords(c *client, tag string, partitions int32, perPart int, ts bool, base int64) []rec {
	var out []rec
	bin := func(seed int) []byte {
		var b []byte
		for i := range 256 {
			x := byte(i + seed)
			if !c.perRecordHeaders && (x == kcatKeyDelim || x == kcatRecDelim) {
				continue // kcat (the one client without per-record headers) splits its input on these
			}
			b = append(b, x)
		}
		return b
	}
	for p := range partitions {
		for i := range perPart {
			id := fmt.Sprintf("%s/p%d/r%d", tag, p, i)
			r := rec{P: p}
			switch i % 5 {
			case 0:
				r.K, r.V = nil, append([]byte(id+"|"), bin(i)...)
			case 1:
				r.K, r.V = []byte("tombstone-"+id), nil
			case 2:
				r.K, r.V = bin(i+7), []byte{}
				if !c.emptyValues {
					r.V = []byte("-")
				}
			case 3:
				big := bytes.Repeat([]byte(id+" compressible "), 600)
				for j := 0; j < len(big); j += 97 {
					big[j] = byte(j * 31) // and some noise
					if !c.perRecordHeaders && (big[j] == kcatKeyDelim || big[j] == kcatRecDelim) {
						big[j] = 'x'
					}
				}
				r.K, r.V = []byte("big-"+id), big
			case 4:
				r.K, r.V = []byte("k-"+id), []byte("v-"+id)
			}
			if c.perRecordHeaders {
				switch i % 4 {
				case 1:
					r.H = []header{{"h1", []byte("one")}}
				case 2:
					r.H = []header{{"dup", []byte("a")}, {"empty", []byte{}}, {"dup", []byte("b-" + strings.ReplaceAll(tag, "/", "-"))}}
				case 3:
					r.H = []header{{"id", []byte(strings.NewReplacer("/", "-", "|", "-").Replace(id))}}
				}
			} else {
				r.H = []header{{"src", []byte(c.name)}, {"empty", []byte{}}}
			}
			if ts && c.timestamps && i%2 == 0 {
				r.TS = base + int64(p)*1000 + int64(i)
			}
			out = append(out, r)
		}
	}
	return out
}

// recentBase is a base for explicit record timestamps: an hour ago, well
// inside the default retention (log.retention.hours=168) of any broker, so
// that retention cannot remove what the tests wrote.
func recentBase() int64 { return time.Now().Add(-time.Hour).Truncate(time.Second).UnixMilli() }

// produced is what one produce op wrote to one topic.
type produced struct {
	topic  string
	codec  string
	prod   *client
	recs   []rec
	t0, t1 int64 // the producer's run, in ms: records without a timestamp must carry one in between
	ok     bool
}

// want returns the records expected in partition p, with their offsets.
func (pr *produced) want(p int32) []rec {
	var out []rec
	for _, r := range pr.recs {
		if r.P == p {
			r.O = int64(len(out))
			out = append(out, r)
		}
	}
	return out
}

// checkRecords compares consumed records with the expected ones exactly;
// a record produced without a timestamp must have a CreateTime within
// [t0, t1].
func checkRecords(t *testing.T, what string, got, want []rec, t0, t1 int64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d records, want %d", what, len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		g, w := got[i], want[i]
		var diffs []string
		if g.P != w.P || g.O != w.O {
			diffs = append(diffs, fmt.Sprintf("partition/offset %d/%d, want %d/%d", g.P, g.O, w.P, w.O))
		}
		if (g.K == nil) != (w.K == nil) || !bytes.Equal(g.K, w.K) {
			diffs = append(diffs, fmt.Sprintf("key %s, want %s", b64s(g.K), b64s(w.K)))
		}
		if (g.V == nil) != (w.V == nil) || !bytes.Equal(g.V, w.V) {
			diffs = append(diffs, fmt.Sprintf("value (%d bytes) %.60s, want (%d bytes) %.60s", len(g.V), b64s(g.V), len(w.V), b64s(w.V)))
		}
		if !slicesEqualHeaders(g.H, w.H) {
			diffs = append(diffs, fmt.Sprintf("headers %v, want %v", g.H, w.H))
		}
		if w.TS != 0 && g.TS != w.TS {
			diffs = append(diffs, fmt.Sprintf("timestamp %d, want %d", g.TS, w.TS))
		}
		if w.TS == 0 && (g.TS < t0 || g.TS > t1) {
			diffs = append(diffs, fmt.Sprintf("timestamp %d, want the producer's clock in [%d, %d]", g.TS, t0, t1))
		}
		if g.TSType != 0 {
			diffs = append(diffs, fmt.Sprintf("timestamp type %d, want 0 (CreateTime)", g.TSType))
		}
		if len(diffs) > 0 {
			t.Errorf("%s: record %d: %s", what, i, strings.Join(diffs, "; "))
		}
	}
}

// checkAcks compares a produce op's acknowledged offsets and timestamps.
func checkAcks(t *testing.T, what string, got result, sent []rec, t0, t1 int64) {
	t.Helper()
	if len(got.Records) != len(sent) {
		t.Errorf("%s: %d acks for %d records", what, len(got.Records), len(sent))
		return
	}
	next := map[int32]int64{}
	for i, r := range sent {
		g := got.Records[i]
		want := next[r.P]
		next[r.P]++
		if g.P != r.P || g.O != want {
			t.Errorf("%s: record %d acked at %d/%d, want %d/%d", what, i, g.P, g.O, r.P, want)
		}
		if r.TS != 0 && g.TS != r.TS || r.TS == 0 && (g.TS < t0 || g.TS > t1) {
			t.Errorf("%s: record %d acked with timestamp %d, want %d (0: in [%d, %d])", what, i, g.TS, r.TS, t0, t1)
		}
	}
}

const (
	rtPartitions = 3
	rtPerPart    = 7
)

// TestRoundTrip: each client produces with each codec it has to its own
// topic (3 partitions, explicit partition per record), then each client
// reads back every topic whose codec it can decode, from offset 0 and
// from the middle, with assign() and no group, and checks every record
// and the partitions' earliest and latest offsets.
func TestRoundTrip(t *testing.T) {
	b := startBroker(t, broker.Options{})
	var all []*produced
	var names []string
	for _, c := range clients {
		for _, codec := range c.codecs {
			pr := &produced{topic: fmt.Sprintf("rt-%s-%s", c.name, codec), codec: codec, prod: c}
			pr.recs = genRecords(c, pr.topic, rtPartitions, rtPerPart, true, recentBase())
			all = append(all, pr)
			names = append(names, pr.topic)
		}
	}
	mustCreate(t, b, rtPartitions, names...)

	for _, c := range clients {
		t.Run("produce/"+c.name, func(t *testing.T) {
			var ops []op
			var mine []*produced
			for _, pr := range all {
				if pr.prod == c {
					ops = append(ops, op{Op: "produce", Topic: pr.topic, Codec: pr.codec, Acks: 1, Records: pr.recs})
					mine = append(mine, pr)
				}
			}
			t0 := time.Now().UnixMilli()
			res := c.run(t, b, ops)
			t1 := time.Now().UnixMilli()
			for i, pr := range mine {
				pr.t0, pr.t1, pr.ok = t0, t1, true
				if c.produceOffsets {
					checkAcks(t, pr.topic, res[i], pr.recs, t0, t1)
				}
			}
		})
	}

	for _, c := range clients {
		t.Run("consume/"+c.name, func(t *testing.T) {
			type check struct {
				pr   *produced
				what string
				want []rec
			}
			var ops []op
			var checks []check
			for _, pr := range all {
				if !pr.ok || !c.has(pr.codec) {
					continue
				}
				for p := range int32(rtPartitions) {
					w := pr.want(p)
					ops = append(ops, op{Op: "consume", Topic: pr.topic, P: p, Offset: 0, N: len(w)})
					checks = append(checks, check{pr, fmt.Sprintf("%s/%d from 0", pr.topic, p), w})
				}
				// assign() at an offset in the middle of a batch.
				w := pr.want(1)[3:]
				ops = append(ops, op{Op: "consume", Topic: pr.topic, P: 1, Offset: 3, N: len(w)})
				checks = append(checks, check{pr, pr.topic + "/1 from 3", w})
				ops = append(ops, op{Op: "offsets", Topic: pr.topic, P: 2})
				checks = append(checks, check{pr, pr.topic + "/2 offsets", pr.want(2)})
			}
			if len(ops) == 0 {
				t.Skip("nothing produced in a codec this client reads")
			}
			res := c.run(t, b, ops)
			for i, ck := range checks {
				if ops[i].Op == "offsets" {
					if res[i].Earliest != 0 || res[i].Latest != int64(len(ck.want)) {
						t.Errorf("%s: earliest %d latest %d, want 0 and %d", ck.what, res[i].Earliest, res[i].Latest, len(ck.want))
					}
					continue
				}
				checkRecords(t, fmt.Sprintf("%s (%s, written by %s)", ck.what, ck.pr.codec, ck.pr.prod.name), res[i].Records, ck.want, ck.pr.t0, ck.pr.t1)
			}
		})
	}
}

// TestAcks: acks=0 (no reply at all: the broker must not answer), acks=1
// and acks=-1 from every client that sets acks, each then read back.
func TestAcks(t *testing.T) {
	b := startBroker(t, broker.Options{})
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			var ops []op
			var prs []*produced
			for _, acks := range []int{0, 1, -1} {
				topic := fmt.Sprintf("acks-%s-%d", c.name, acks)
				mustCreate(t, b, 2, topic)
				pr := &produced{topic: topic, recs: genRecords(c, topic, 2, 30, false, 0)}
				prs = append(prs, pr)
				ops = append(ops, op{Op: "produce", Topic: topic, Codec: "none", Acks: acks, Records: pr.recs})
			}
			t0 := time.Now().UnixMilli()
			res := c.run(t, b, ops)
			t1 := time.Now().UnixMilli()
			for i, pr := range prs {
				if ops[i].Acks != 0 && c.produceOffsets {
					checkAcks(t, pr.topic, res[i], pr.recs, t0, t1)
				}
			}
			// Read back with kgo (the acks=0 data must arrive too: loopback,
			// one connection, in order).
			var cops []op
			for _, pr := range prs {
				for p := range int32(2) {
					cops = append(cops, op{Op: "consume", Topic: pr.topic, P: p, N: len(pr.want(p))})
				}
			}
			got := runKgo(t, b, cops)
			for i, o := range cops {
				pr := prs[i/2]
				checkRecords(t, fmt.Sprintf("%s/%d", o.Topic, o.P), got[i].Records, pr.want(o.P), t0, t1)
			}
		})
	}
}

// TestOffsetsByTime: ListOffsets by timestamp, earliest and latest, asked
// by every client about topics written with explicit timestamps by each
// client that can set them. Partition 0's timestamps rise; partition 1's
// do not, and a time lookup must return the first offset whose timestamp
// is at or after the time asked for (Kafka's rule), with that timestamp.
func TestOffsetsByTime(t *testing.T) {
	b := startBroker(t, broker.Options{})
	base := recentBase()
	p0 := []int64{base, base + 1000, base + 2000, base + 3000, base + 4000}
	p1 := []int64{base + 3000, base + 1000, base + 2000, base + 5000, base + 4000}
	type query struct {
		p      int32
		ts     int64
		offset int64 // -1: none
	}
	queries := []query{
		{0, 0, 0}, {0, base - 1, 0}, {0, base, 0}, {0, base + 1, 1}, {0, base + 2500, 3}, {0, base + 4000, 4}, {0, base + 4001, -1},
		{1, base - 1, 0}, {1, base + 1500, 0}, {1, base + 3000, 0}, {1, base + 3001, 3}, {1, base + 4500, 3}, {1, base + 5000, 3}, {1, base + 5001, -1},
	}
	tsOf := func(p int32, off int64) int64 {
		if p == 0 {
			return p0[off]
		}
		return p1[off]
	}
	var topics []string
	for _, c := range clients {
		if !c.timestamps {
			continue
		}
		topic := "ts-" + c.name
		topics = append(topics, topic)
		mustCreate(t, b, 2, topic)
		var recs []rec
		for i, ts := range p0 {
			recs = append(recs, rec{P: 0, K: []byte(fmt.Sprint("k", i)), V: []byte(fmt.Sprint("v", i)), TS: ts})
		}
		for i, ts := range p1 {
			recs = append(recs, rec{P: 1, K: []byte(fmt.Sprint("k", i)), V: []byte(fmt.Sprint("v", i)), TS: ts})
		}
		c.run(t, b, []op{{Op: "produce", Topic: topic, Codec: "none", Acks: 1, Records: recs}})
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			var ops []op
			for _, topic := range topics {
				for p := range int32(2) {
					o := op{Op: "offsets", Topic: topic, P: p}
					for _, q := range queries {
						if q.p == p {
							o.Times = append(o.Times, q.ts)
						}
					}
					ops = append(ops, o)
				}
			}
			res := c.run(t, b, ops)
			for i, o := range ops {
				r := res[i]
				what := fmt.Sprintf("%s/%d", o.Topic, o.P)
				if r.Earliest != 0 || r.Latest != 5 {
					t.Errorf("%s: earliest %d latest %d, want 0 and 5", what, r.Earliest, r.Latest)
				}
				if len(r.Times) != len(o.Times) {
					t.Errorf("%s: %d answers to %d time queries", what, len(r.Times), len(o.Times))
					continue
				}
				j := 0
				for _, q := range queries {
					if q.p != o.P {
						continue
					}
					got := r.Times[j]
					j++
					if got.Offset != q.offset {
						t.Errorf("%s: offset for time %d: %d, want %d", what, q.ts, got.Offset, q.offset)
						continue
					}
					wantTS := int64(-1)
					if q.offset >= 0 {
						wantTS = tsOf(o.P, q.offset)
					}
					if got.TS != nil && *got.TS != wantTS {
						t.Errorf("%s: timestamp for time %d: %d, want %d", what, q.ts, *got.TS, wantTS)
					}
				}
			}
		})
	}
}

// TestOutOfRange: assign() at an offset past the end gets
// OFFSET_OUT_OF_RANGE from the broker, and each client's reset to the
// earliest offset then reads the partition from 0.
func TestOutOfRange(t *testing.T) {
	b := startBroker(t, broker.Options{})
	kg := clientNamed("kgo")
	recs := genRecords(kg, "oor", 1, 6, false, 0)
	mustCreate(t, b, 1, "oor")
	t0 := time.Now().UnixMilli()
	kg.run(t, b, []op{{Op: "produce", Topic: "oor", Codec: "none", Acks: 1, Records: recs}})
	t1 := time.Now().UnixMilli()
	for _, c := range clients {
		if c.name == "kcat" {
			continue // kcat -o past the end waits at the end (auto.offset.reset=largest)
		}
		t.Run(c.name, func(t *testing.T) {
			res := c.run(t, b, []op{{Op: "consume", Topic: "oor", P: 0, Offset: 1000, N: len(recs)}})
			pr := produced{recs: recs}
			checkRecords(t, "oor/0 from 1000 reset to earliest", res[0].Records, pr.want(0), t0, t1)
		})
	}
}

// TestTopicAdmin: CreateTopics and DeleteTopics from each admin client,
// with the exact error codes of the usual mistakes, and metadata before
// and after.
func TestTopicAdmin(t *testing.T) {
	opts := broker.Options{Partitions: 5}
	b := startBroker(t, opts)
	node := wantNodeID(opts)
	for _, c := range clients {
		if !c.admin {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			name := "adm-" + c.name
			bad := "bad name!" + c.name
			type step struct {
				o    op
				want map[string]int16 // nil for metadata
			}
			steps := []step{
				{op{Op: "create", Topics: []newTopic{{name, 4, 1}}}, map[string]int16{name: 0}},
				{op{Op: "create", Topics: []newTopic{{name, 4, 1}}}, map[string]int16{name: 36}},                   // TOPIC_ALREADY_EXISTS
				{op{Op: "create", Topics: []newTopic{{name + "-rf3", 1, 3}}}, map[string]int16{name + "-rf3": 38}}, // INVALID_REPLICATION_FACTOR
				{op{Op: "create", Topics: []newTopic{{name + "-p0", 0, 1}}}, map[string]int16{name + "-p0": 37}},   // INVALID_PARTITIONS
				{op{Op: "create", Topics: []newTopic{{bad, 1, 1}}}, map[string]int16{bad: 17}},                     // INVALID_TOPIC_EXCEPTION
			}
			if c.defaultPartitions {
				steps = append(steps, step{op{Op: "create", Topics: []newTopic{{name + "-dflt", -1, 1}}}, map[string]int16{name + "-dflt": 0}})
			}
			mdBefore := len(steps)
			steps = append(steps,
				step{op{Op: "metadata"}, nil},
				step{op{Op: "delete", Names: []string{name}}, map[string]int16{name: 0}},
				step{op{Op: "delete", Names: []string{name}}, map[string]int16{name: 3}}, // UNKNOWN_TOPIC_OR_PARTITION
			)
			if c.defaultPartitions {
				steps = append(steps, step{op{Op: "delete", Names: []string{name + "-dflt"}}, map[string]int16{name + "-dflt": 0}})
			}
			mdAfter := len(steps)
			steps = append(steps, step{op{Op: "metadata"}, nil})
			var ops []op
			for _, s := range steps {
				ops = append(ops, s.o)
			}
			res := c.run(t, b, ops)
			for i, s := range steps {
				if s.want == nil || fmt.Sprint(res[i].Errors) == fmt.Sprint(s.want) {
					continue
				}
				if len(s.o.Topics) == 1 && s.o.Topics[0].Name == bad {
					deviation(t, "topic-name", "create %q: errors %v, want %v", bad, res[i].Errors, s.want)
					continue
				}
				t.Errorf("step %d %s %v%v: errors %v, want %v", i, s.o.Op, s.o.Names, s.o.Topics, res[i].Errors, s.want)
			}
			checkTopic(t, "after create", res[mdBefore], name, 4, node)
			if c.defaultPartitions {
				checkTopic(t, "after create with -1 partitions", res[mdBefore], name+"-dflt", 5, node)
			}
			for _, gone := range []string{name + "-rf3", name + "-p0"} {
				if _, ok := res[mdBefore].Topics[gone]; ok {
					t.Errorf("metadata lists %q, whose creation failed", gone)
				}
			}
			if _, ok := res[mdBefore].Topics[bad]; ok {
				deviation(t, "topic-name", "metadata lists %q, whose creation must fail", bad)
			}
			for _, gone := range []string{name, name + "-dflt"} {
				if _, ok := res[mdAfter].Topics[gone]; ok {
					t.Errorf("metadata after delete still lists %q", gone)
				}
			}
		})
	}
}

// checkTopic checks that metadata lists topic with partitions 0..n-1, each
// led by node with replicas and ISR exactly [node].
func checkTopic(t *testing.T, what string, md result, topic string, n int32, node int32) {
	t.Helper()
	ps, ok := md.Topics[topic]
	if !ok {
		t.Errorf("%s: metadata does not list %s (topics %v)", what, topic, sortedTopics(md.Topics))
		return
	}
	if len(ps) != int(n) {
		t.Errorf("%s: %s has %d partitions, want %d", what, topic, len(ps), n)
	}
	for p := range n {
		pm, ok := ps[p]
		if !ok || pm.Leader != node || !slices.Equal(pm.Replicas, []int32{node}) || !slices.Equal(pm.ISR, []int32{node}) {
			t.Errorf("%s: %s/%d: %+v (listed %v), want leader %d, replicas and isr [%d]", what, topic, p, pm, ok, node, node)
		}
	}
}

// TestMetadata: every client sees exactly one broker, itself at
// 127.0.0.1:port with its broker.id, as the controller, and exactly the
// topics that exist.
func TestMetadata(t *testing.T) {
	opts := broker.Options{BrokerID: 7}
	b := startBroker(t, opts)
	node := wantNodeID(opts)
	if b.NodeID != node {
		t.Errorf("the broker reports node id %d, want %d (broker.id)", b.NodeID, node)
	}
	mustCreate(t, b, 2, "md-two")
	mustCreate(t, b, 1, "md-one")
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			md := c.run(t, b, []op{{Op: "metadata"}})[0]
			want := []mdBroker{{node, "127.0.0.1", int32(b.Port)}}
			if !slices.Equal(md.Brokers, want) {
				t.Errorf("brokers %+v, want %+v", md.Brokers, want)
			}
			if md.Controller != node {
				t.Errorf("controller %d, want %d", md.Controller, node)
			}
			if got := sortedTopics(md.Topics); !slices.Equal(got, []string{"md-one", "md-two"}) {
				t.Errorf("topics %v, want [md-one md-two]", got)
			}
			checkTopic(t, c.name, md, "md-two", 2, node)
			checkTopic(t, c.name, md, "md-one", 1, node)
		})
	}
}

// TestAutoCreate: with auto.create.topics.enable=true a producer's
// metadata request creates the topic with num.partitions partitions; with
// false, the topic is unknown and is not created.
func TestAutoCreate(t *testing.T) {
	for _, on := range []bool{true, false} {
		t.Run(fmt.Sprint("enable=", on), func(t *testing.T) {
			opts := broker.Options{AutoCreate: on, Partitions: 2}
			b := startBroker(t, opts)
			cl := newKgo(t, b, kgo.AllowAutoTopicCreation(), kgo.DisableIdempotentWrite(), kgo.UnknownTopicRetries(2),
				kgo.RecordPartitioner(kgo.ManualPartitioner()))
			ctx := t.Context()
			err := cl.ProduceSync(ctx, &kgo.Record{Topic: "auto", Partition: 1, Value: []byte("x")}).FirstErr()
			md := runKgo(t, b, []op{{Op: "metadata"}})[0]
			if on {
				if err != nil {
					t.Fatalf("produce to an auto-created topic: %v", err)
				}
				checkTopic(t, "auto-created", md, "auto", 2, wantNodeID(opts))
				got := runKgo(t, b, []op{{Op: "consume", Topic: "auto", P: 1, N: 1}})[0].Records
				if len(got) != 1 || string(got[0].V) != "x" || got[0].O != 0 {
					t.Errorf("read back %+v", got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "UNKNOWN_TOPIC_OR_PARTITION") {
				t.Errorf("produce with auto-create off: %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
			}
			if len(md.Topics) != 0 {
				t.Errorf("topics %v, want none", sortedTopics(md.Topics))
			}
		})
	}
}

// TestRestart: what was acknowledged before a kill -9 is still there after
// a restart on the same log.dirs, and the offsets continue.
func TestRestart(t *testing.T) {
	b := startBroker(t, broker.Options{})
	kg := clientNamed("kgo")
	mustCreate(t, b, 2, "durable")
	first := genRecords(kg, "before", 2, 10, true, recentBase())
	t0 := time.Now().UnixMilli()
	kg.run(t, b, []op{{Op: "produce", Topic: "durable", Codec: "gzip", Acks: -1, Records: first}})
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	second := genRecords(kg, "after", 2, 4, true, recentBase()+100_000)
	res := kg.run(t, b, []op{{Op: "produce", Topic: "durable", Codec: "none", Acks: -1, Records: second}})
	t1 := time.Now().UnixMilli()
	for i, r := range res[0].Records {
		if want := int64(10 + i%4); r.O != want {
			t.Errorf("after restart: record %d acked at offset %d, want %d", i, r.O, want)
		}
	}
	all := produced{recs: append(append([]rec{}, first...), second...)}
	for _, c := range []*client{kg, clientNamed("kafka-python")} {
		var ops []op
		for p := range int32(2) {
			ops = append(ops, op{Op: "consume", Topic: "durable", P: p, N: len(all.want(p))})
		}
		for i, r := range c.run(t, b, ops) {
			checkRecords(t, fmt.Sprintf("%s: durable/%d", c.name, i), r.Records, all.want(int32(i)), t0, t1)
		}
	}
}

// TestRetentionKeepsOffsets: time-based retention that removes every record
// of a partition moves its log start offset up to the log end offset and
// never rewinds offsets: new records continue the numbering, also after a
// restart.
func TestRetentionKeepsOffsets(t *testing.T) {
	b := startBroker(t, broker.Options{Extra: map[string]string{"log.retention.check.interval.ms": "200"}})
	cl := newKgo(t, b)
	adm := kadm.NewClient(cl)
	ctx := t.Context()
	hour := "3600000"
	rs, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"retention.ms": &hour}, "old")
	if err != nil || rs["old"].Err != nil {
		t.Fatalf("create topic old with retention.ms=1h: %v %v", err, rs["old"].Err)
	}
	kg := clientNamed("kgo")
	var recs []rec
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	for i := range 10 {
		recs = append(recs, rec{V: []byte(fmt.Sprint("old-", i)), TS: old + int64(i)})
	}
	kg.run(t, b, []op{{Op: "produce", Topic: "old", Codec: "none", Acks: 1, Records: recs}})
	deadline := time.Now().Add(20 * time.Second)
	var offs result
	for {
		offs = kg.run(t, b, []op{{Op: "offsets", Topic: "old"}})[0]
		if offs.Earliest == 10 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if offs.Earliest != 10 || offs.Latest != 10 {
		t.Fatalf("records 2h old under retention.ms=1h: earliest %d latest %d 20s later, want 10 and 10", offs.Earliest, offs.Latest)
	}
	check := func(when string, first int64) {
		t.Helper()
		res := kg.run(t, b, []op{{Op: "produce", Topic: "old", Codec: "none", Acks: 1, Records: []rec{{V: []byte(when)}}}})
		if got := res[0].Records[0].O; got != first {
			deviation(t, "restart-empty-log", "%s: new record at offset %d, want %d", when, got, first)
		}
	}
	restart := func(when string, earliest, latest int64) {
		t.Helper()
		if err := b.Restart(); err != nil {
			t.Fatal(err)
		}
		if offs := kg.run(t, b, []op{{Op: "offsets", Topic: "old"}})[0]; offs.Earliest != earliest || offs.Latest != latest {
			deviation(t, "restart-empty-log", "%s: earliest %d latest %d, want %d and %d", when, offs.Earliest, offs.Latest, earliest, latest)
		}
	}
	// An emptied log across a restart, then one with a record.
	restart("restart with an emptied log", 10, 10)
	check("after retention", 10)
	restart("restart after a new record", 10, 11)
	check("after restart", 11)
	got := kg.run(t, b, []op{{Op: "consume", Topic: "old", Offset: 10, N: 2}})[0].Records
	if len(got) != 2 || string(got[0].V) != "after retention" || got[0].O != 10 || string(got[1].V) != "after restart" || got[1].O != 11 {
		deviation(t, "restart-empty-log", "read from 10: %+v", got)
	}
}

// TestRetentionAtStartup: records already past retention when the broker
// restarts (the periodic check has not run yet) may be removed at startup,
// but the offsets go on from where they were.
func TestRetentionAtStartup(t *testing.T) {
	b := startBroker(t, broker.Options{})
	adm := kadm.NewClient(newKgo(t, b))
	hour := "3600000"
	rs, err := adm.CreateTopics(t.Context(), 1, 1, map[string]*string{"retention.ms": &hour}, "old")
	if err != nil || rs["old"].Err != nil {
		t.Fatalf("create topic old with retention.ms=1h: %v %v", err, rs["old"].Err)
	}
	kg := clientNamed("kgo")
	var recs []rec
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	for i := range 10 {
		recs = append(recs, rec{V: []byte(fmt.Sprint("old-", i)), TS: old + int64(i)})
	}
	kg.run(t, b, []op{{Op: "produce", Topic: "old", Codec: "none", Acks: 1, Records: recs}})
	if err := b.Restart(); err != nil {
		t.Fatal(err)
	}
	offs := kg.run(t, b, []op{{Op: "offsets", Topic: "old"}})[0]
	if (offs.Earliest != 0 && offs.Earliest != 10) || offs.Latest != 10 {
		deviation(t, "restart-empty-log", "after a restart: earliest %d latest %d, want 0 or 10 (retention done) and 10", offs.Earliest, offs.Latest)
	}
	res := kg.run(t, b, []op{{Op: "produce", Topic: "old", Codec: "none", Acks: 1, Records: []rec{{V: []byte("new")}}}})
	if got := res[0].Records[0].O; got != 10 {
		deviation(t, "restart-empty-log", "new record at offset %d, want 10", got)
	}
}
