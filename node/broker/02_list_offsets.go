package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ListOffsets: v0-v5.
//
// Timestamp -1 asks for the latest offset (the high watermark: there are no
// transactions, so it is also the last stable offset), -2 for the earliest
// (the log start offset), anything else for the first offset whose record
// timestamp is at or after it (offset -1 if none). v0 answers in
// OldStyleOffsets; v1+ in Offset and Timestamp. v4 adds leader epochs
// (always 0 here). v6 is flexible and v7's max-timestamp query is not
// served.

func init() { register(2, "ListOffsets", 0, 5, handleListOffsets) }

func handleListOffsets(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.ListOffsetsRequest)
	resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
	pending := 1
	finish := func() {
		if pending--; pending == 0 {
			b.reply(r, resp)
		}
	}
	resp.Topics = make([]kmsg.ListOffsetsResponseTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		st := &resp.Topics[i]
		st.Topic = rt.Topic
		st.Partitions = make([]kmsg.ListOffsetsResponseTopicPartition, len(rt.Partitions))
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			sp := &st.Partitions[j]
			sp.Default()
			sp.Partition = rp.Partition
			p := b.partition(rt.Topic, rp.Partition)
			switch {
			case p == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				continue
			case req.Version >= 4 && rp.CurrentLeaderEpoch > 0:
				sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
				continue
			}
			set := func(offset, ts int64) {
				if req.Version == 0 {
					sp.OldStyleOffsets = []int64{}
					if offset >= 0 && rp.MaxNumOffsets > 0 {
						sp.OldStyleOffsets = []int64{offset}
					}
					return
				}
				sp.Offset, sp.Timestamp, sp.LeaderEpoch = offset, ts, 0
			}
			switch rp.Timestamp {
			case -1:
				set(p.log.HighWatermark(), -1)
			case -2:
				set(p.log.LogStartOffset(), -1)
			default:
				if rp.Timestamp < 0 {
					sp.ErrorCode = kerr.InvalidRequest.Code
					continue
				}
				pending++
				p.log.OffsetForTimestamp(rp.Timestamp, func(offset, ts int64, err error) {
					if err != nil {
						sp.ErrorCode = storageErrorCode(err)
					} else if offset < 0 {
						set(-1, -1)
						if req.Version >= 4 {
							sp.LeaderEpoch = -1
						}
					} else {
						set(offset, ts)
					}
					finish()
				})
			}
		}
	}
	finish()
}
