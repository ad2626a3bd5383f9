// Package trash empties files a node no longer needs in small steps instead
// of removing them whole.
//
// Why: a file removed whole frees all its blocks at once, and on this
// machine's ext4 (mounted with online discard) the commit that frees them
// stalled every fdatasync on the disk, other processes' too, about 0.4 ms per
// MB freed: 7 ms for an 18 MB keeper snapshot, 14 ms for a 36 MB WAL segment,
// and 370-460 ms of a broker's end-to-end latency (one fsync per message)
// while 1 GiB files were removed beside it (DESIGN.md, sections 6 and 11). So
// a file no longer needed is renamed to <name>.del and, once that rename
// is durable, truncated Config.StepBytes at a time, each step's blocks freed
// by a background sync of its own (off the node's main disk lane) and
// Config.Gap apart, then removed. A crash forgets what the trash held: owners
// hand such files they find when they recover back to a Bin (Adopt).
//
// A Bin is sans-I/O and single-threaded like the rest of node/: it submits
// node.DiskOp values through its Host and continues when the owner hands back
// each completion, or when the owner's timer fires (Bin.Timer).
package trash

import (
	"errors"
	"fmt"
	"time"

	"herd/node"
)

// Suffix marks a file renamed for the trash, unless Config.Suffix says
// otherwise.
const Suffix = ".del"

// Host is what a Bin needs from its owner.
type Host struct {
	// Disk submits op; the owner calls done with its completion, later,
	// never from inside Disk.
	Disk func(op node.DiskOp, done func(ev node.Event))
	// SetTimer asks the owner to call Bin.Timer after d (one timer: a
	// later call replaces an earlier one). Nil: steps follow each other
	// without a gap (tests that do not drive timers).
	SetTimer func(d time.Duration)
	// Fail reports a failed rename, truncate, sync or removal of a
	// discarded file (a missing file is no failure). The file is garbage,
	// but after a failed write of any kind no later fsync can be trusted
	// (fsyncgate), so the owner must stop as it would for its own data:
	// a raft server halts, a broker's log directory goes offline. The Bin
	// submits nothing more after it.
	Fail func(err error)
}

// Config paces the emptying.
type Config struct {
	// Suffix is appended to a discarded file's name (default ".del").
	Suffix string
	// StepBytes: bytes freed per step (default 4 MiB). Steps of 1 MiB every
	// 5 ms made so many commits (each a device flush) that the keeper's
	// sets' p99 rose; 4 MiB every 20 ms keeps each stall near 1.5 ms.
	StepBytes int64
	// Gap: time between steps (default 20 ms).
	Gap time.Duration
	// MaxFiles and MaxBytes bound the files waiting to be emptied (defaults
	// 64 and 1 GiB). Past either, a file is removed whole, as before the
	// Bin: the disk space a user freed must come back in bounded time.
	MaxFiles int
	MaxBytes int64
}

func (c Config) withDefaults() Config {
	if c.Suffix == "" {
		c.Suffix = Suffix
	}
	if c.StepBytes <= 0 {
		c.StepBytes = 4 << 20
	}
	if c.Gap <= 0 {
		c.Gap = 20 * time.Millisecond
	}
	if c.MaxFiles <= 0 {
		c.MaxFiles = 64
	}
	if c.MaxBytes <= 0 {
		c.MaxBytes = 1 << 30
	}
	return c
}

// batch is one Discard or Adopt call: its files, and whether dir goes when
// the last of them is gone.
type batch struct {
	dir       string
	left      int  // files not yet removed
	removeDir bool // remove dir once they are
}

type file struct {
	path  string
	size  int64 // bytes still to free
	steps int   // truncations so far
	b     *batch
}

// Bin empties discarded files one at a time.
type Bin struct {
	h   Host
	cfg Config

	// queued files wait their turn (sizes known, renames durable); cur is
	// the one being emptied (nil: none). queuedBytes counts the bytes
	// still to free of queued and cur.
	queued      []*file
	cur         *file
	queuedBytes int64
	// freed counts bytes removed without a gap since the last one: small
	// files go back to back until they add up to a step.
	freed    int64
	waiting  bool // a timer is set, or a step's ops are in flight
	timerSet bool // Timer is due
	stopped  bool

	stats Stats
}

// Stats counts what a Bin did.
type Stats struct {
	Emptied uint64 // files emptied in more than one step
	Whole   uint64 // files removed whole (past MaxFiles or MaxBytes)
	Removed uint64 // files removed, either way
	Queued  int    // files waiting now (including the one being emptied)
	Bytes   int64  // their bytes still to free
}

// New returns an empty Bin.
func New(h Host, cfg Config) *Bin {
	if h.Disk == nil || h.Fail == nil {
		panic("trash: Host needs Disk and Fail")
	}
	return &Bin{h: h, cfg: cfg.withDefaults()}
}

// Stats reports the Bin's counters.
func (b *Bin) Stats() Stats {
	s := b.stats
	s.Queued = len(b.queued)
	if b.cur != nil {
		s.Queued++
	}
	s.Bytes = b.queuedBytes
	return s
}

// Stop ends the emptying: nothing more is submitted (the owner is closing
// or has failed). The owner's recovery hands files left back (Adopt).
func (b *Bin) Stop() { b.stopped = true }

// Discard renames each of paths (files in dir) to path+Config.Suffix, syncs dir,
// and then empties them.
func (b *Bin) Discard(dir string, paths []string) {
	if b.stopped || len(paths) == 0 {
		return
	}
	bt := &batch{dir: dir, left: len(paths)}
	renamed := make([]string, 0, len(paths))
	for _, p := range paths {
		to := p + b.cfg.Suffix
		renamed = append(renamed, to)
		b.submit(node.RenameOp(p, to), nil)
	}
	b.submit(node.BackgroundSyncDirOp(dir), func(bool) {
		// A failed sync stopped the Bin; a missing dir, or a rename that
		// failed as missing, leaves files the stats report gone.
		if !b.stopped {
			b.stat(bt, renamed)
		}
	})
}

// Adopt empties files that need no rename (in a directory renamed for
// removal, or named for the trash by a run that crashed), and removes dir
// after them if removeDir. It syncs dir first: the names it was handed are
// what the directory holds now, not necessarily what a crash would leave,
// and a file must not be cut under a name that could come back as a live
// one.
func (b *Bin) Adopt(dir string, paths []string, removeDir bool) {
	if b.stopped {
		return
	}
	bt := &batch{dir: dir, left: len(paths), removeDir: removeDir}
	if len(paths) == 0 {
		b.finish(bt) // an empty directory: only it goes
		return
	}
	b.submit(node.BackgroundSyncDirOp(dir), func(bool) {
		if !b.stopped { // as in Discard
			b.stat(bt, paths)
		}
	})
}

// submit submits op; then (may be nil) learns whether it succeeded. A
// failure other than a missing file stops the Bin and is reported to the
// owner; then still runs, to keep the Bin's counts.
func (b *Bin) submit(op node.DiskOp, then func(ok bool)) {
	b.h.Disk(op, func(ev node.Event) {
		ok := ev.Err == nil
		if !ok && !errors.Is(ev.Err, node.ErrNotExist) && !b.stopped {
			b.stopped = true
			b.h.Fail(fmt.Errorf("trash: %v %s of a discarded file: %w", op.Kind, op.Path, ev.Err))
		}
		if then != nil {
			then(ok)
		}
	})
}

// stat learns each file's size, then queues it or, past the bounds,
// removes it whole.
func (b *Bin) stat(bt *batch, paths []string) {
	for _, p := range paths {
		b.h.Disk(node.StatOp(p), func(ev node.Event) {
			if b.stopped {
				return
			}
			if ev.Err != nil {
				b.gone(bt) // missing (a stat changes nothing): nothing to free
				return
			}
			f := &file{path: p, size: ev.Size, b: bt}
			if b.Stats().Queued+1 > b.cfg.MaxFiles || b.queuedBytes+f.size > b.cfg.MaxBytes {
				b.stats.Whole++
				b.remove(f)
				return
			}
			b.queued = append(b.queued, f)
			b.queuedBytes += f.size
			b.next()
		})
	}
}

// next starts on the next queued file unless a step or gap is under way.
func (b *Bin) next() {
	if b.stopped || b.waiting || b.cur != nil || len(b.queued) == 0 {
		return
	}
	b.cur = b.queued[0]
	b.queued[0] = nil
	b.queued = b.queued[1:]
	b.step()
}

// step frees the next StepBytes of cur, or removes it once that is all it
// holds.
func (b *Bin) step() {
	f := b.cur
	if f.size < 0 || b.queuedBytes < f.size {
		panic(fmt.Sprintf("trash: %s has %d bytes left of the %d queued", f.path, f.size, b.queuedBytes))
	}
	if f.size <= b.cfg.StepBytes {
		b.cur = nil
		b.queuedBytes -= f.size
		b.freed += f.size
		if f.steps > 0 {
			b.stats.Emptied++
		}
		b.remove(f)
		if b.freed >= b.cfg.StepBytes {
			b.pause()
		} else {
			b.next()
		}
		return
	}
	f.size -= b.cfg.StepBytes
	b.queuedBytes -= b.cfg.StepBytes
	f.steps++
	b.waiting = true
	b.submit(node.TruncateOp(f.path, f.size), nil)
	b.submit(node.BackgroundSyncOp(f.path), func(ok bool) {
		b.waiting = false
		if b.stopped {
			return
		}
		if !ok {
			// Gone under us (nothing here removes it early, but a
			// missing file has nothing left to free).
			b.cur = nil
			b.queuedBytes -= f.size
			b.gone(f.b)
			b.next()
			return
		}
		b.pause()
	})
}

// pause waits Gap before the next step.
func (b *Bin) pause() {
	b.freed = 0
	if b.h.SetTimer == nil {
		b.continueSteps()
		return
	}
	b.waiting, b.timerSet = true, true
	b.h.SetTimer(b.cfg.Gap)
}

// Timer continues the emptying; the owner calls it when the timer set
// through Host.SetTimer fires.
func (b *Bin) Timer() {
	if !b.timerSet {
		return
	}
	b.waiting, b.timerSet = false, false
	b.continueSteps()
}

func (b *Bin) continueSteps() {
	if b.stopped {
		return
	}
	if b.cur != nil {
		b.step()
		return
	}
	b.next()
}

// remove removes f whole.
func (b *Bin) remove(f *file) {
	b.submit(node.RemoveOp(f.path), func(ok bool) {
		if ok {
			b.stats.Removed++
		}
		b.gone(f.b)
	})
}

// gone counts one file of bt as removed and finishes bt after its last.
func (b *Bin) gone(bt *batch) {
	if bt.left--; bt.left == 0 {
		b.finish(bt)
	}
}

// finish removes bt's directory if it was to go.
func (b *Bin) finish(bt *batch) {
	if !b.stopped && bt.removeDir {
		b.submit(node.RemoveOp(bt.dir), nil)
	}
}
