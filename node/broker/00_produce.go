package broker

import (
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"herd/node/broker/partlog"
)

// Produce: v3-v8.
//
// v3 is the first version with RecordBatch v2 (magic 2), the only format
// herd stores; librdkafka enables it only if v3 is in the range. v5 adds
// LogStartOffset, v8 per-record errors (never set). v9 is flexible and v13
// uses topic ids; not served.
//
// acks: 0 gets no reply at all (an error closes the connection after the
// earlier replies, which is how Kafka tells such a producer); 1 and -1 are
// answered once the batch is written (and fsynced if the flush policy asks),
// the same thing on one broker. The batch bytes go to partlog exactly as
// the producer sent them; partlog validates and stamps them.
//
// An unknown topic is auto-created (auto.create.topics.enable) and the
// request waits for it.

func init() { register(0, "Produce", 3, 8, handleProduce) }

func handleProduce(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.ProduceRequest)
	resp := req.ResponseKind().(*kmsg.ProduceResponse)
	if req.Acks != 0 && req.Acks != 1 && req.Acks != -1 {
		for _, rt := range req.Topics {
			st := kmsg.ProduceResponseTopic{Topic: rt.Topic}
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.InvalidRequiredAcks.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		b.reply(r, resp)
		return
	}
	names := make([]string, 0, len(req.Topics))
	for _, rt := range req.Topics {
		names = append(names, rt.Topic)
	}
	b.ensureTopics(names, b.cfg.AutoCreateTopics, func() { b.produce(r, req, resp) })
}

func (b *Broker) produce(r *request, req *kmsg.ProduceRequest, resp *kmsg.ProduceResponse) {
	pending := 1
	failed := false
	// A write that failed may still be queued with the batch: its frame
	// is handed back only if every write completed.
	writeFailed := false
	type slot struct {
		sp  *kmsg.ProduceResponseTopicPartition
		log partitionLog
	}
	var appended []slot
	finish := func() {
		if pending--; pending > 0 {
			return
		}
		if r.frame != nil && !writeFailed {
			b.env.Recycle(r.frame)
		}
		r.frame = nil
		for _, s := range appended {
			if s.sp.ErrorCode == 0 {
				s.sp.LogStartOffset = s.log.LogStartOffset()
			}
		}
		if req.Acks == 0 {
			r.closeAfter = failed
			b.noReply(r)
			return
		}
		b.reply(r, resp)
	}
	resp.Topics = make([]kmsg.ProduceResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		st.Topic = rt.Topic
		st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			sp := &st.Partitions[j]
			sp.Default()
			sp.Partition = rp.Partition
			p := b.partition(rt.Topic, rp.Partition)
			if p == nil {
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				failed = true
				continue
			}
			if len(rp.Records) == 0 {
				sp.ErrorCode = kerr.CorruptMessage.Code
				failed = true
				continue
			}
			base, _, appendTime, err := p.log.Append(rp.Records, 0, func(err error) {
				if err != nil {
					sp.ErrorCode = storageErrorCode(err)
					sp.BaseOffset = -1
					failed = true
					writeFailed = true
				}
				finish()
			})
			if err != nil {
				sp.ErrorCode = appendErrorCode(err)
				msg := err.Error()
				if req.Version >= 8 {
					sp.ErrorMessage = &msg
				}
				failed = true
				continue
			}
			pending++
			sp.BaseOffset = base
			sp.LogAppendTime = appendTime
			appended = append(appended, slot{sp, p.log})
		}
	}
	finish()
}

// appendErrorCode maps partlog's validation errors to Kafka's codes.
func appendErrorCode(err error) int16 {
	switch {
	case errors.Is(err, partlog.ErrCorrupt):
		return kerr.CorruptMessage.Code
	case errors.Is(err, partlog.ErrInvalidRecord):
		return kerr.InvalidRecord.Code
	case errors.Is(err, partlog.ErrTooLarge):
		return kerr.MessageTooLarge.Code
	case errors.Is(err, partlog.ErrUnsupportedMagic):
		return kerr.UnsupportedForMessageFormat.Code
	}
	return storageErrorCode(err)
}

// storageErrorCode maps errors of a log that failed or went away.
func storageErrorCode(err error) int16 {
	switch {
	case errors.Is(err, partlog.ErrClosed):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, partlog.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	}
	return kerr.KafkaStorageError.Code
}
