package keeper

import (
	"bytes"
	"testing"

	"herd/node/jute"
)

// A body built with header room and stamped in place is the same frame
// replyFrame builds from the bare body.
func TestStampReplyMatchesReplyFrame(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("v"), make([]byte, 1000)} {
		resp := &jute.GetDataResponse{Data: data, Stat: jute.Stat{Czxid: 1, Mzxid: 2, Version: 3, DataLength: int32(len(data)), Pzxid: 9}}
		want := replyFrame(77, 1<<40+5, jute.ErrOK, jute.Marshal(resp))
		got := stampReply(framedBody(resp, 4+len(data)+statLen), 77, 1<<40+5)
		if !bytes.Equal(got, want) {
			t.Fatalf("data %d bytes: stamped frame\n%x\nwant\n%x", len(data), got, want)
		}
	}
	st := jute.Stat{Version: 4}
	if n := len(jute.Marshal(&st)); n != statLen {
		t.Fatalf("statLen %d, a Stat encodes to %d bytes", statLen, n)
	}
}
