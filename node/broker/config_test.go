package broker

import (
	"strings"
	"testing"
)

func TestParseServerProperties(t *testing.T) {
	text := `# A Kafka-style file
broker.id=3
listeners = PLAINTEXT://127.0.0.1:9092,\
    INTERNAL://:9093
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT
advertised.listeners=PLAINTEXT://kafka.example:19092
! bang comment
log.dirs: /var/lib/herd
num.partitions 4
log.retention.minutes=90
log.retention.hours=1
log.segment.bytes=1048576
log.flush.interval.messages=1
message.max.bytes=2000000
socket.request.max.bytes=5000000
auto.create.topics.enable=false
zookeeper.connect=localhost:2181
num.network.threads=3
weird.key=1
`
	c, err := ParseServerProperties(text)
	if err != nil {
		t.Fatal(err)
	}
	if c.BrokerID != 3 || c.NumPartitions != 4 || c.LogDirs[0] != "/var/lib/herd" || c.AutoCreateTopics ||
		c.SocketRequestMaxBytes != 5000000 || c.Log.MaxMessageBytes != 2000000 || c.Log.SegmentBytes != 1048576 ||
		c.Log.FlushMessages != 1 || c.ZookeeperConnect != "localhost:2181" {
		t.Fatalf("parsed %+v", c)
	}
	if c.Log.RetentionMs != 90*60_000 {
		t.Errorf("retention %d: minutes must win over hours", c.Log.RetentionMs)
	}
	if len(c.Listeners) != 2 || c.Listeners[0] != (Listener{"PLAINTEXT", "127.0.0.1", 9092}) || c.Listeners[1] != (Listener{"INTERNAL", "", 9093}) {
		t.Errorf("listeners %+v", c.Listeners)
	}
	if len(c.Advertised) != 1 || c.Advertised[0].Addr() != "kafka.example:19092" {
		t.Errorf("advertised %+v", c.Advertised)
	}
	w := strings.Join(c.Warnings, "\n")
	if !strings.Contains(w, "weird.key") || !strings.Contains(w, "num.network.threads") {
		t.Errorf("warnings: %s", w)
	}

	for _, bad := range []struct{ text, want string }{
		{"num.partitions=0", "num.partitions"},
		{"num.partitions=x", "num.partitions"},
		{"listeners=SSL://:9093", "PLAINTEXT only"},
		{"listeners=localhost:9092", "NAME://host:port"},
		{"log.dirs=/a,/b", "single log directory"},
		{"auto.create.topics.enable=maybe", "true or false"},
		{"broker.id=1\nbroker.id=2", "set twice"},
		{"log.retention.ms=-5", "log.retention.ms"},
		{"listeners=CLIENT://:9092", "listener.security.protocol.map"},
	} {
		_, err := ParseServerProperties(bad.text)
		if err == nil || !strings.Contains(err.Error(), bad.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: error %v, want one line mentioning %q", bad.text, err, bad.want)
		}
	}
}

func TestParsePropertiesEscapes(t *testing.T) {
	props, order, err := parseProperties("a\\=b=c\\u0041\\\\\nkey\\ with\\ spaces value  \ncont=1,\\\n  2,\\\n  3\n")
	if err != nil {
		t.Fatal(err)
	}
	if props["a=b"] != "cA\\" || props["key with spaces"] != "value" || props["cont"] != "1,2,3" || len(order) != 3 {
		t.Fatalf("%q", props)
	}
}
