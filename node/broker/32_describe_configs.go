package broker

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node/broker/partlog"
)

// DescribeConfigs: v0-v3.
//
// Topic resources report every topic config key: an override set on the
// topic (DYNAMIC_TOPIC_CONFIG), else the broker's value from
// server.properties (STATIC_BROKER_CONFIG), else Kafka's default
// (DEFAULT_CONFIG). The broker resource (named by broker.id, or "" for the
// cluster default) reports what server.properties set. v1 adds sources and
// synonyms, v3 config types (documentation stays null). v4 is flexible; not
// served.

func init() { register(32, "DescribeConfigs", 0, 3, handleDescribeConfigs) }

// topicConfigBrokerKey maps a topic config key to the server.properties key
// that sets its default.
var topicConfigBrokerKey = map[string]string{
	"segment.bytes":          "log.segment.bytes",
	"segment.ms":             "log.roll.ms",
	"retention.bytes":        "log.retention.bytes",
	"retention.ms":           "log.retention.ms",
	"index.interval.bytes":   "log.index.interval.bytes",
	"segment.index.bytes":    "log.index.size.max.bytes",
	"max.message.bytes":      "message.max.bytes",
	"flush.messages":         "log.flush.interval.messages",
	"flush.ms":               "log.flush.interval.ms",
	"message.timestamp.type": "log.message.timestamp.type",
	"cleanup.policy":         "log.cleanup.policy",
	"compression.type":       "compression.type",
	"min.insync.replicas":    "min.insync.replicas",
}

// topicConfigDefaults are Kafka 2.8's defaults for the keys partlog does not
// model.
var topicConfigDefaults = map[string]string{
	"cleanup.policy":                          "delete",
	"compression.type":                        "producer",
	"delete.retention.ms":                     "86400000",
	"file.delete.delay.ms":                    "60000",
	"follower.replication.throttled.replicas": "",
	"leader.replication.throttled.replicas":   "",
	"max.compaction.lag.ms":                   "9223372036854775807",
	"message.downconversion.enable":           "true",
	"message.format.version":                  "2.8-IV1",
	"message.timestamp.difference.max.ms":     "9223372036854775807",
	"message.timestamp.type":                  "CreateTime",
	"min.cleanable.dirty.ratio":               "0.5",
	"min.compaction.lag.ms":                   "0",
	"min.insync.replicas":                     "1",
	"preallocate":                             "false",
	"segment.jitter.ms":                       "0",
	"unclean.leader.election.enable":          "false",
}

// logConfigValues renders the keys partlog models from a Config.
func logConfigValues(c partlog.Config) map[string]string {
	never := func(n int64) string {
		if n <= 0 {
			return strconv.FormatInt(math.MaxInt64, 10)
		}
		return strconv.FormatInt(n, 10)
	}
	timestampType := "CreateTime"
	if c.LogAppendTime {
		timestampType = "LogAppendTime"
	}
	return map[string]string{
		"message.timestamp.type": timestampType,
		"segment.bytes":          strconv.FormatInt(c.SegmentBytes, 10),
		"segment.ms":             strconv.FormatInt(c.SegmentMs, 10),
		"retention.bytes":        strconv.FormatInt(c.RetentionBytes, 10),
		"retention.ms":           strconv.FormatInt(c.RetentionMs, 10),
		"index.interval.bytes":   strconv.Itoa(c.IndexIntervalBytes),
		"segment.index.bytes":    strconv.Itoa(c.SegmentIndexBytes),
		"max.message.bytes":      strconv.Itoa(c.MaxMessageBytes),
		"flush.messages":         never(c.FlushMessages),
		"flush.ms":               never(c.FlushMs),
	}
}

func configType(key string) kmsg.ConfigType {
	switch topicConfigKeys[key] {
	case "long":
		return kmsg.ConfigTypeLong
	case "int":
		return kmsg.ConfigTypeInt
	case "double":
		return kmsg.ConfigTypeDouble
	case "boolean":
		return kmsg.ConfigTypeBoolean
	case "list":
		return kmsg.ConfigTypeList
	}
	return kmsg.ConfigTypeString
}

func handleDescribeConfigs(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.DescribeConfigsRequest)
	resp := req.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range req.Resources {
		sr := kmsg.NewDescribeConfigsResponseResource()
		sr.ResourceType, sr.ResourceName = rr.ResourceType, rr.ResourceName
		fail := func(code int16, format string, args ...any) {
			sr.ErrorCode = code
			msg := fmt.Sprintf(format, args...)
			sr.ErrorMessage = &msg
		}
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t := b.topics[rr.ResourceName]
			if t == nil || t.readyParts() == 0 {
				fail(kerr.UnknownTopicOrPartition.Code, "topic %s does not exist", rr.ResourceName)
				break
			}
			sr.Configs = b.topicConfigs(req, t, rr.ConfigNames)
		case kmsg.ConfigResourceTypeBroker:
			if rr.ResourceName != "" && rr.ResourceName != strconv.Itoa(int(b.cfg.BrokerID)) {
				fail(kerr.InvalidRequest.Code, "this is broker %d, not %s", b.cfg.BrokerID, rr.ResourceName)
				break
			}
			sr.Configs = b.brokerConfigs(req, rr.ConfigNames)
		default:
			fail(kerr.InvalidRequest.Code, "herd describes topic and broker configs only")
		}
		resp.Resources = append(resp.Resources, sr)
	}
	b.reply(r, resp)
}

func (b *Broker) topicConfigs(req *kmsg.DescribeConfigsRequest, t *topic, names []string) []kmsg.DescribeConfigsResponseResourceConfig {
	logCfg := t.parts[0].log.Config()
	modelled := logConfigValues(logCfg)
	brokerModelled := logConfigValues(b.cfg.Log)
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, key := range sortedKeys(topicConfigKeys) {
		if names != nil && !slices.Contains(names, key) {
			continue
		}
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		rc.Name = key
		rc.ConfigType = configType(key)
		var synonyms []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym
		syn := func(name, value string, src kmsg.ConfigSource) {
			v := value
			synonyms = append(synonyms, kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{Name: name, Value: &v, Source: src})
		}
		value, source := "", kmsg.ConfigSourceDefaultConfig
		if v, ok := t.overrides[key]; ok {
			value, source = v, kmsg.ConfigSourceDynamicTopicConfig
			syn(key, v, source)
		}
		if bk, ok := topicConfigBrokerKey[key]; ok && b.brokerSets(bk) {
			bv := b.cfg.Props[bk]
			if m, ok := brokerModelled[key]; ok {
				bv = m // the resolved value (retention.ms from hours, ...)
			}
			if source == kmsg.ConfigSourceDefaultConfig {
				value, source = bv, kmsg.ConfigSourceStaticBrokerConfig
			}
			syn(bk, bv, kmsg.ConfigSourceStaticBrokerConfig)
		}
		if source == kmsg.ConfigSourceDefaultConfig {
			if v, ok := modelled[key]; ok {
				value = v
			} else {
				value = topicConfigDefaults[key]
			}
			syn(key, value, source)
		}
		if v, ok := modelled[key]; ok {
			value = v // what the log actually uses
		}
		rc.Value = &value
		rc.Source = source
		rc.IsDefault = source == kmsg.ConfigSourceDefaultConfig
		if req.IncludeSynonyms {
			rc.ConfigSynonyms = synonyms
		}
		out = append(out, rc)
	}
	return out
}

// brokerSets reports whether server.properties set the broker key (or one
// of the keys Kafka resolves it from).
func (b *Broker) brokerSets(key string) bool {
	keys := []string{key}
	switch key {
	case "log.retention.ms":
		keys = append(keys, "log.retention.minutes", "log.retention.hours")
	case "log.roll.ms":
		keys = append(keys, "log.roll.hours")
	}
	for _, k := range keys {
		if _, ok := b.cfg.Props[k]; ok {
			return true
		}
	}
	return false
}

func (b *Broker) brokerConfigs(req *kmsg.DescribeConfigsRequest, names []string) []kmsg.DescribeConfigsResponseResourceConfig {
	values := map[string]string{
		"broker.id":                  strconv.Itoa(int(b.cfg.BrokerID)),
		"num.partitions":             strconv.Itoa(int(b.cfg.NumPartitions)),
		"default.replication.factor": strconv.Itoa(int(b.cfg.DefaultReplicationFactor)),
		"socket.request.max.bytes":   strconv.Itoa(b.cfg.SocketRequestMaxBytes),
		"fetch.max.bytes":            strconv.Itoa(b.cfg.FetchMaxBytes),
		"auto.create.topics.enable":  strconv.FormatBool(b.cfg.AutoCreateTopics),
		"log.segment.bytes":          strconv.FormatInt(b.cfg.Log.SegmentBytes, 10),
		"log.roll.ms":                strconv.FormatInt(b.cfg.Log.SegmentMs, 10),
		"log.retention.bytes":        strconv.FormatInt(b.cfg.Log.RetentionBytes, 10),
		"log.retention.ms":           strconv.FormatInt(b.cfg.Log.RetentionMs, 10),
		"message.max.bytes":          strconv.Itoa(b.cfg.Log.MaxMessageBytes),
		"log.message.timestamp.type": logConfigValues(b.cfg.Log)["message.timestamp.type"],
	}
	for k, v := range b.cfg.Props { // order-independent: output is sorted below
		if _, ok := values[k]; !ok {
			values[k] = v
		}
	}
	var out []kmsg.DescribeConfigsResponseResourceConfig
	for _, key := range sortedKeys(values) {
		if names != nil && !slices.Contains(names, key) {
			continue
		}
		rc := kmsg.NewDescribeConfigsResponseResourceConfig()
		rc.Name = key
		v := values[key]
		rc.Value = &v
		rc.ReadOnly = true
		rc.Source = kmsg.ConfigSourceDefaultConfig
		if b.brokerSets(key) {
			rc.Source = kmsg.ConfigSourceStaticBrokerConfig
		}
		rc.IsDefault = rc.Source == kmsg.ConfigSourceDefaultConfig
		rc.ConfigType = kmsg.ConfigTypeString
		if req.IncludeSynonyms {
			rc.ConfigSynonyms = []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{{Name: key, Value: &v, Source: rc.Source}}
		}
		out = append(out, rc)
	}
	return out
}
