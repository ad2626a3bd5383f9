package frame

import (
	"bytes"
	"errors"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Any split of a stream of frames yields the same frames, in order.
func TestReassemblesAnySplit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		bodies := rapid.SliceOf(rapid.SliceOfN(rapid.Byte(), 0, 300)).Draw(t, "bodies")
		var stream []byte
		for _, b := range bodies {
			stream = Append(stream, b)
		}
		r := NewReader(1000)
		var got [][]byte
		for len(stream) > 0 {
			k := rapid.IntRange(1, len(stream)).Draw(t, "chunk")
			r.Feed(stream[:k])
			stream = stream[k:]
			for {
				b, ok, err := r.Next()
				if err != nil {
					t.Fatal(err)
				}
				if !ok {
					break
				}
				got = append(got, append([]byte(nil), b...))
			}
		}
		if len(got) != len(bodies) {
			t.Fatalf("got %d frames, want %d", len(got), len(bodies))
		}
		for i := range got {
			if !bytes.Equal(got[i], bodies[i]) {
				t.Fatalf("frame %d differs", i)
			}
		}
		if r.Buffered() != 0 {
			t.Fatalf("%d bytes left over", r.Buffered())
		}
	})
}

func TestRejectsOversizedAndNegative(t *testing.T) {
	for _, hdr := range [][]byte{{0, 0, 4, 1}, {0xff, 0xff, 0xff, 0xff}} {
		r := NewReader(1024)
		r.Feed(hdr)
		if _, _, err := r.Next(); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("header %x: err %v, want ErrTooLarge", hdr, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 7, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(1 << 16)
		r.Feed(data)
		for {
			b, ok, err := r.Next()
			if err != nil || !ok {
				return
			}
			if len(b) > 1<<16 {
				t.Fatal("frame beyond limit")
			}
		}
	})
}
