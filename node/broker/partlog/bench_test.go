package partlog

import (
	"fmt"
	"testing"
	"time"

	"herd/disk"
	"herd/node"
)

// nullFS completes every operation at once and stores nothing: it isolates
// partlog's own cost from the simulated disk's memcpy.
type nullFS struct{}

func (nullFS) ReadAt(string, int64, int) ([]byte, error) { return []byte{}, nil }
func (nullFS) WriteAt(string, int64, []byte) error       { return nil }
func (nullFS) Truncate(string, int64) error              { return nil }
func (nullFS) Sync(string) error                         { return nil }
func (nullFS) SyncDir(string) error                      { return nil }
func (nullFS) Mkdir(string) error                        { return nil }
func (nullFS) Rename(string, string) error               { return nil }
func (nullFS) Remove(string) error                       { return nil }
func (nullFS) List(string) ([]node.DirEntry, error)      { return nil, nil }
func (nullFS) Stat(p string) (node.DirEntry, error)      { return node.DirEntry{Name: p}, nil }

// BenchmarkAppend measures Append plus the high-watermark advance for
// 16 KiB batches of 100-byte records (what a producer with the default
// batch.size sends), one append at a time through the whole pipeline:
// validation, stamping, index upkeep, the write, its completion, done.
func BenchmarkAppend(b *testing.B) {
	for _, fm := range []int64{0, 1} {
		for _, fsName := range []string{"simfs", "nulldisk", "osdisk"} {
			b.Run(fmt.Sprintf("%s/flush.messages=%d", fsName, fm), func(b *testing.B) {
				var fs disk.FS = disk.NewSimFS()
				switch fsName {
				case "nulldisk":
					fs = nullFS{}
				case "osdisk":
					o, err := disk.NewOS(b.TempDir())
					if err != nil {
						b.Fatal(err)
					}
					defer o.Close()
					fs = o
				}
				dr := newDriver(b, fs)
				cfg := DefaultConfig()
				cfg.FlushMessages = fm
				cfg.SegmentBytes = 64 << 20
				cfg.RetentionBytes = 256 << 20 // keeps the simulated disk's memory flat
				d := dr.open("", cfg)
				l := dr.create(d, tp0, nil)
				recs := make([]record, 150)
				for i := range recs {
					recs[i] = record{tsDelta: int64(i), value: make([]byte, 100)}
				}
				batch := makeBatch(dr.wall, recs)
				records := int64(len(recs))
				b.SetBytes(int64(len(batch)))
				b.ReportAllocs()
				b.ResetTimer()
				acked := 0
				done := func(err error) {
					if err != nil {
						b.Fatal(err)
					}
					acked++
				}
				for i := range b.N {
					// The simulated disk copied the bytes when the write
					// ran, so the batch buffer can be reused, as a broker
					// reuses its network buffers.
					if _, _, _, err := l.Append(batch, 0, done); err != nil {
						b.Fatal(err)
					}
					dr.run()
					if i%4096 == 4095 {
						dr.tick(d, time.Second)
						dr.run()
					}
				}
				b.StopTimer()
				if acked != b.N {
					b.Fatalf("acked %d of %d", acked, b.N)
				}
				b.ReportMetric(float64(records)*float64(b.N)/b.Elapsed().Seconds(), "records/s")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkRecovery measures an unclean open that scans a 256 MiB log
// (every batch's CRC checked, indexes rebuilt).
func BenchmarkRecovery(b *testing.B) {
	fs := disk.NewSimFS()
	dr := newDriver(b, fs)
	cfg := DefaultConfig()
	cfg.SegmentBytes = 64 << 20
	d := dr.open("", cfg)
	l := dr.create(d, tp0, nil)
	recs := make([]record, 150)
	for i := range recs {
		recs[i] = record{tsDelta: int64(i), value: make([]byte, 100)}
	}
	batch := makeBatch(dr.wall, recs)
	const total = 256 << 20
	for l.Size() < total {
		if _, _, _, err := l.Append(batch, 0, func(error) {}); err != nil {
			b.Fatal(err)
		}
		dr.run()
	}
	leo := l.LogEndOffset()
	dr.drop()
	b.SetBytes(l.Size())
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		img := fs.Clone()
		b.StartTimer()
		dr2 := newDriver(b, img)
		d2 := dr2.open("", cfg)
		if got := d2.Log(tp0).LogEndOffset(); got != leo {
			b.Fatalf("recovered to %d, want %d", got, leo)
		}
		if !dr2.logged("4 scanned") && !dr2.logged("5 scanned") {
			b.Fatalf("not a full scan: %v", dr2.logs)
		}
	}
}

// countFS counts the bytes and operations of reads.
type countFS struct {
	disk.FS
	reads, readBytes int64
}

func (c *countFS) ReadAt(p string, off int64, n int) ([]byte, error) {
	b, err := c.FS.ReadAt(p, off, n)
	c.reads++
	c.readBytes += int64(len(b))
	return b, err
}

// BenchmarkRead consumes a log of ~600 KB batches of 1 KiB records from the
// start, as the broker reads for a fetch (minOneBatch, maxBytes per
// partition), in the process that appended it ("appended") and after a clean
// reopen ("reopened", where nothing read was verified by this process).
// read-B/B is the bytes read from disk per byte delivered.
func BenchmarkRead(b *testing.B) {
	for _, reopen := range []bool{false, true} {
		for _, maxBytes := range []int{256 << 10, 50 << 20} {
			name := fmt.Sprintf("appended/maxBytes=%d", maxBytes)
			if reopen {
				name = fmt.Sprintf("reopened/maxBytes=%d", maxBytes)
			}
			b.Run(name, func(b *testing.B) {
				o, err := disk.NewOS(b.TempDir())
				if err != nil {
					b.Fatal(err)
				}
				defer o.Close()
				fs := &countFS{FS: o}
				dr := newDriver(b, fs)
				cfg := DefaultConfig()
				cfg.SegmentBytes = 32 << 20
				d := dr.open("", cfg)
				l := dr.create(d, tp0, nil)
				recs := make([]record, 580)
				for i := range recs {
					recs[i] = record{tsDelta: int64(i), value: make([]byte, 1024)}
				}
				for l.Size() < 64<<20 {
					dr.appendSync(l, makeBatch(dr.wall, recs))
					dr.wall++
				}
				if reopen {
					dr.close(d)
					dr = newDriver(b, fs)
					d = dr.open("", cfg)
					l = d.Log(tp0)
				}
				hw := l.HighWatermark()
				fs.reads, fs.readBytes = 0, 0
				var delivered int64
				b.ResetTimer()
				for range b.N {
					for off := int64(0); off < hw; {
						res := dr.read(l, off, maxBytes, true)
						if res.Err != nil || len(res.Records) == 0 {
							b.Fatalf("read %d: %v (%d bytes)", off, res.Err, len(res.Records))
						}
						hs := splitBatches(b, res.Records)
						off = hs[len(hs)-1].nextOffset()
						delivered += int64(len(res.Records))
					}
				}
				b.StopTimer()
				b.SetBytes(delivered / int64(b.N))
				b.ReportMetric(float64(fs.readBytes)/float64(delivered), "read-B/B")
				b.ReportMetric(float64(fs.reads)/float64(b.N), "reads/op")
			})
		}
	}
}
