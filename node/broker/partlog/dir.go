package partlog

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"herd/node"
	"herd/node/trash"
)

// checkpointInterval is how often Tick rewrites the dir-level checkpoint
// files when they changed (Kafka: recovery point every 60 s, high watermark
// every 5 s; one interval for all three keeps it to one directory sync).
const checkpointInterval = 5 * time.Second

// ErrLogExists is returned by CreateLog for a partition the Dir already has
// (or is still deleting).
var ErrLogExists = errors.New("partlog: log already exists")

// ErrBacklog is returned by Append when the log already has maxPendingAppends
// appends (or maxPendingBytes bytes) waiting for the disk: the queue is
// bounded, and the broker should answer the producer with a retriable error
// rather than buffer without limit.
var ErrBacklog = errors.New("partlog: too many appends waiting for the disk")

const (
	maxPendingAppends = 1 << 14
	maxPendingBytes   = 256 << 20
	// maxDeferred bounds callbacks waiting for the next completion (reads
	// answered without touching the disk).
	maxDeferred = 1 << 16
)

type dirState uint8

const (
	dirOpening dirState = iota
	dirOpen
	dirClosing
	dirClosed
)

// Dir is one log directory.
type Dir struct {
	h        Host
	path     string
	defaults Config

	logs     map[TopicPartition]*Log
	sorted   []*Log                  // the logs in (topic, partition) order
	busy     map[TopicPartition]bool // being created or deleted
	onHW     func(*Log)
	onFail   func(error)
	state    dirState
	failed   error // a mutating disk op failed: the whole dir is offline, as in Kafka
	closeCBs []func(error)
	// closeStarted: Close's final checkpoint and marker are under way.
	closeStarted bool

	inflight int      // ops submitted and not yet completed
	deferred []func() // run after the next completion (never re-entrantly)
	kicked   bool     // a no-op is in flight just to run deferred

	ckptDirty   bool
	ckptWriting bool
	ckptWaiters []func(error) // called when the checkpoint being written is durable
	ckptNext    []func(error) // waiting for the one after it
	ckptAgain   bool
	lastCkpt    node.Time

	cache     indexCache
	deleteSeq int
	// trash empties the files of deleted segments and logs step by step
	// (node/trash says why).
	trash *trash.Bin
}

// TrashStats reports what the Dir's trash did.
func (d *Dir) TrashStats() trash.Stats { return d.trash.Stats() }

// newTrash makes the Dir's trash. Its files keep Kafka's ".deleted" name
// (recovery hands those it finds back to it); a failure to empty one takes
// the dir offline as any failed write does.
func (d *Dir) newTrash() *trash.Bin {
	cfg := d.h.Trash
	cfg.Suffix = deletedSuffix
	var setTimer func(time.Duration)
	if d.h.After != nil {
		setTimer = func(after time.Duration) { d.h.After(after, d.trash.Timer) }
	}
	return trash.New(trash.Host{
		Disk:     d.do,
		SetTimer: setTimer,
		Fail:     d.fail,
	}, cfg)
}

func (d *Dir) join(name string) string {
	if d.path == "" {
		return name
	}
	return d.path + "/" + name
}

func (d *Dir) logf(format string, args ...any) {
	if d.h.Logf != nil {
		d.h.Logf("partlog: "+format, args...)
	}
}

// do submits op; cb runs on completion. A nil cb means "must succeed": its
// failure takes the dir offline (a failed write or fsync may have lost data,
// and after fsyncgate no later fsync can be trusted).
func (d *Dir) do(op node.DiskOp, cb func(ev node.Event)) {
	d.inflight++
	d.h.Disk(op, func(ev node.Event) {
		d.inflight--
		if cb != nil {
			cb(ev)
		} else if ev.Err != nil {
			d.fail(fmt.Errorf("%v %s: %w", op.Kind, op.Path, ev.Err))
		}
		d.runDeferred()
	})
}

// recycle hands read buffers nothing references any more back to the
// shell (Host.Recycle).
func (d *Dir) recycle(bufs ...[]byte) {
	if d.h.Recycle == nil {
		return
	}
	for _, b := range bufs {
		if cap(b) > 0 {
			d.h.Recycle(b)
		}
	}
}

// later runs fn after the next disk completion. Answers that need no disk
// (an empty read at the high watermark, an out-of-range offset) go through
// here so that no callback ever runs inside the call that registered it;
// if nothing is in flight, a cheap stat provides the completion.
func (d *Dir) later(fn func()) {
	if len(d.deferred) >= maxDeferred {
		// The broker bounds the requests it has in flight; this many
		// unanswered ones means that bound is gone.
		panic("partlog: deferred callback queue full")
	}
	d.deferred = append(d.deferred, fn)
	if d.inflight == 0 && !d.kicked {
		d.kicked = true
		d.do(node.StatOp(d.path), func(node.Event) { d.kicked = false })
	}
}

func (d *Dir) runDeferred() {
	for len(d.deferred) > 0 {
		fns := d.deferred
		d.deferred = nil
		for i, fn := range fns {
			fns[i] = nil
			fn()
		}
		if d.deferred == nil {
			d.deferred = fns[:0] // reuse the array
		}
	}
}

// fail takes the dir offline: every waiting append is answered with
// ErrStorage and every later call fails with it.
func (d *Dir) fail(err error) {
	if d.failed != nil {
		return
	}
	d.failed = fmt.Errorf("%w: %v", ErrStorage, err)
	d.logf("dir %q offline: %v", d.path, err)
	d.trash.Stop()
	for _, l := range d.sorted {
		l.failPending(ErrStorage)
	}
	d.finishCheckpoint(d.failed)
	if d.state == dirClosing {
		d.finishClose(d.failed)
	}
	if d.onFail != nil {
		fn := d.onFail
		d.later(func() { fn(d.failed) })
	}
}

// OnFailure registers fn, called once when the directory goes offline (a
// write, truncate, rename or fsync failed). A broker whose only log
// directory failed should stop, as Kafka's does: a restart runs recovery,
// while staying up would refuse every write for good.
func (d *Dir) OnFailure(fn func(error)) { d.onFail = fn }

// usable reports why calls on the dir cannot proceed, if they cannot.
func (d *Dir) usable() error {
	switch {
	case d.failed != nil:
		return ErrStorage
	case d.state != dirOpen:
		return ErrClosed
	}
	return nil
}

func (d *Dir) insert(l *Log) {
	d.logs[l.tp] = l
	i, _ := slices.BinarySearchFunc(d.sorted, l.tp, func(x *Log, tp TopicPartition) int { return compareTP(x.tp, tp) })
	d.sorted = slices.Insert(d.sorted, i, l)
}

func (d *Dir) remove(l *Log) {
	delete(d.logs, l.tp)
	i, ok := slices.BinarySearchFunc(d.sorted, l.tp, func(x *Log, tp TopicPartition) int { return compareTP(x.tp, tp) })
	if !ok {
		panic("partlog: log missing from the sorted list")
	}
	d.sorted = slices.Delete(d.sorted, i, i+1)
}

func compareTP(a, b TopicPartition) int {
	if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return cmp.Compare(a.Partition, b.Partition)
}

// Logs returns the logs in (topic, partition) order.
func (d *Dir) Logs() []*Log { return slices.Clone(d.sorted) }

// Log returns the log of tp, or nil.
func (d *Dir) Log(tp TopicPartition) *Log { return d.logs[tp] }

// OnHighWatermark registers fn, called whenever a log's high watermark
// advances (the broker completes waiting fetches from it). It is called
// from disk completions only.
func (d *Dir) OnHighWatermark(fn func(*Log)) { d.onHW = fn }

// CreateLog creates an empty log for tp. overrides are topic-level config
// keys (retention.ms, segment.bytes, message.timestamp.type, ...) applied on
// top of the Dir's defaults; they and topicID are persisted in the partition
// directory (partition.metadata and herd-topic.properties), so OpenDir
// restores them. done is called once the directory, both files and the
// first segment are durable. Keys partlog does not interpret are kept.
func (d *Dir) CreateLog(tp TopicPartition, topicID [16]byte, overrides map[string]string, done func(*Log, error)) {
	fail := func(err error) {
		d.later(func() { done(nil, err) })
	}
	if err := d.usable(); err != nil {
		fail(err)
		return
	}
	if !validTopic(tp.Topic) || tp.Partition < 0 {
		fail(fmt.Errorf("%w: bad topic partition %q/%d", ErrInvalidConfig, tp.Topic, tp.Partition))
		return
	}
	if d.logs[tp] != nil || d.busy[tp] {
		fail(ErrLogExists)
		return
	}
	cfg, err := applyOverrides(d.defaults, overrides)
	if err != nil {
		fail(err)
		return
	}
	l := newLog(d, tp, topicID, cloneMap(overrides), cfg)
	d.busy[tp] = true
	d.do(node.MkdirOp(l.path), func(ev node.Event) {
		if ev.Err != nil && !errors.Is(ev.Err, node.ErrExist) {
			d.fail(fmt.Errorf("mkdir %s: %w", l.path, ev.Err))
		}
	})
	meta, over := l.file(partitionMetaFile), l.file(topicOverridesFile)
	for _, f := range []struct {
		path string
		data []byte
	}{{meta, encodePartitionMetadata(topicID)}, {over, encodeOverrides(l.overrides)}} {
		// Cut to length: a directory left by an interrupted attempt may
		// hold a longer file.
		d.do(node.WriteOp(f.path, 0, f.data), nil)
		d.do(node.TruncateOp(f.path, int64(len(f.data))), nil)
		d.do(node.SyncOp(f.path), nil)
	}
	seg := newSegment(0)
	l.segs = []*segment{seg}
	d.do(node.WriteOp(l.segFile(seg, logSuffix), 0, nil), nil)
	d.do(node.SyncDirOp(l.path), nil)
	d.do(node.SyncDirOp(d.path), func(ev node.Event) {
		delete(d.busy, tp)
		if ev.Err != nil {
			d.fail(fmt.Errorf("syncdir %s: %w", d.path, ev.Err))
		}
		if d.failed != nil {
			done(nil, ErrStorage)
			return
		}
		if d.state != dirOpen {
			done(nil, ErrClosed)
			return
		}
		d.insert(l)
		d.ckptDirty = true
		done(l, nil)
	})
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for _, k := range slices.Sorted(mapKeys(m)) {
		out[k] = m[k]
	}
	return out
}

// DeleteLog removes tp's log and its files, as Kafka does: the directory is
// renamed to "<topic>-<partition>.<tag>-delete" (durably, so a crash cannot
// resurrect the log), the checkpoints are rewritten without it, and done is
// called; then the trash empties its files step by step and removes the
// directory (node/trash says why; Kafka too removes the files later, after
// file.delete.delay.ms). Appends still waiting are answered with ErrClosed.
// OpenDir finishes any deletion a crash or Close interrupted.
func (d *Dir) DeleteLog(tp TopicPartition, done func(error)) {
	l := d.logs[tp]
	err := d.usable()
	if err == nil && l == nil {
		err = fmt.Errorf("partlog: no log for %s", partitionDirName(tp))
	}
	if err != nil {
		d.later(func() { done(err) })
		return
	}
	d.remove(l)
	d.busy[tp] = true
	l.close(ErrClosed)
	for _, s := range l.segs {
		d.cache.drop(s)
	}
	d.deleteSeq++
	gone := d.join(fmt.Sprintf("%s.%d-%d%s", partitionDirName(tp), d.h.Now(), d.deleteSeq, deleteDirSuffix))
	d.do(node.RenameOp(l.path, gone), nil)
	d.do(node.SyncDirOp(d.path), nil)
	d.writeCheckpoints(func(err error) {
		delete(d.busy, tp)
		if err != nil {
			done(err)
			return
		}
		d.do(node.ListOp(gone), func(ev node.Event) {
			if ev.Err != nil {
				d.fail(fmt.Errorf("list %s: %w", gone, ev.Err))
				return
			}
			files := make([]string, 0, len(ev.Entries))
			for _, e := range ev.Entries {
				files = append(files, gone+"/"+e.Name)
			}
			d.trash.Adopt(gone, files, true)
		})
		done(nil)
	})
}

// Tick does time-driven work: flush.ms flushes, segment roll by time,
// retention, checkpoint files. The owner calls it about once a second.
func (d *Dir) Tick() {
	d.runDeferred()
	if d.usable() != nil {
		return
	}
	now, wall := d.h.Now(), d.h.WallClock()
	for _, l := range slices.Clone(d.sorted) {
		l.tick(now, wall)
	}
	if d.ckptDirty && now.Sub(d.lastCkpt) >= checkpointInterval {
		d.writeCheckpoints(nil)
	}
}

// writeCheckpoints writes the three dir-level checkpoint files atomically
// (tmp, fsync, rename, then one directory fsync) from the logs' current
// state; done (may be nil) is called once they are durable. One write is in
// flight at a time; asking during one schedules another after it.
func (d *Dir) writeCheckpoints(done func(error)) {
	if d.ckptWriting {
		d.ckptAgain = true
		if done != nil {
			d.ckptNext = append(d.ckptNext, done)
		}
		return
	}
	d.ckptWriting = true
	if done != nil {
		d.ckptWaiters = append(d.ckptWaiters, done)
	}
	d.ckptDirty = false
	d.lastCkpt = d.h.Now()
	var rp, start, hw []checkpointEntry
	for _, l := range d.sorted {
		rp = append(rp, checkpointEntry{l.tp, l.recoveryPoint})
		start = append(start, checkpointEntry{l.tp, max(l.start, l.retainStart)})
		hw = append(hw, checkpointEntry{l.tp, l.hw})
	}
	// The renames wait for the last sync's completion: the shell's disk
	// worker goes on to the ops queued behind a failed one before the loop
	// learns of it, so a rename queued with its file's write ran after the
	// write or sync failed and put a file no sync made durable under the
	// live name, which a power loss can leave malformed and the next start
	// then ignores (a log start read back as the first segment's). A failed
	// write, truncate or sync fails the dir at its completion, before this
	// one's.
	files := []string{recoveryPointFile, logStartFile, highWatermarkFile}
	for i, es := range [][]checkpointEntry{rp, start, hw} {
		tmp := d.join(files[i]) + tmpSuffix
		data := encodeCheckpoint(es)
		d.do(node.WriteOp(tmp, 0, data), nil)
		d.do(node.TruncateOp(tmp, int64(len(data))), nil)
		if i < len(files)-1 {
			d.do(node.SyncOp(tmp), nil)
			continue
		}
		d.do(node.SyncOp(tmp), func(ev node.Event) {
			if ev.Err != nil {
				d.fail(fmt.Errorf("sync %s: %w", tmp, ev.Err))
			}
			if d.failed != nil {
				return // fail finished the checkpoint
			}
			for _, name := range files {
				d.do(node.RenameOp(d.join(name)+tmpSuffix, d.join(name)), nil)
			}
			d.do(node.SyncDirOp(d.path), func(ev node.Event) {
				if ev.Err != nil {
					d.fail(fmt.Errorf("syncdir %s: %w", d.path, ev.Err))
					return
				}
				d.finishCheckpoint(d.failed)
			})
		})
	}
}

func (d *Dir) finishCheckpoint(err error) {
	if !d.ckptWriting {
		return
	}
	waiters := d.ckptWaiters
	d.ckptWaiters = nil
	d.ckptWriting = false
	if err == nil && d.ckptAgain {
		d.ckptAgain = false
		next := d.ckptNext
		d.ckptNext = nil
		d.writeCheckpoints(nil)
		d.ckptWaiters = append(d.ckptWaiters, next...)
	} else if err != nil {
		waiters = append(waiters, d.ckptNext...)
		d.ckptNext = nil
	}
	for _, w := range waiters {
		w(err)
	}
}

// Close flushes every log (sealing the active segments' indexes), waits for
// every append, writes the checkpoint files and the clean-shutdown marker,
// and calls done. Later calls on the dir fail with ErrClosed.
func (d *Dir) Close(done func(error)) {
	if d.state != dirOpen || d.failed != nil {
		err := ErrClosed
		if d.failed != nil {
			err = ErrStorage
		}
		d.later(func() { done(err) })
		return
	}
	d.state = dirClosing
	d.closeCBs = append(d.closeCBs, done)
	d.trash.Stop() // the next OpenDir hands what is left back to the trash
	for _, l := range d.sorted {
		l.sealIndexes(l.active())
		l.flush()
	}
	// A no-op so that closeStep runs from a completion even if every log
	// was already idle.
	d.do(node.StatOp(d.path), func(node.Event) { d.closeStep() })
}

// closeStep finishes Close once no log has anything in flight.
func (d *Dir) closeStep() {
	if d.state != dirClosing || d.failed != nil {
		return
	}
	for _, l := range d.sorted {
		if l.flushing || l.queueLen() > 0 {
			return
		}
	}
	if d.closeStarted {
		return
	}
	d.closeStarted = true
	for _, l := range d.sorted {
		if l.recoveryPoint != l.leo() || l.hw != l.leo() {
			panic(fmt.Sprintf("partlog: %s idle at close but recovery point %d, hw %d, leo %d",
				l.name(), l.recoveryPoint, l.hw, l.leo()))
		}
	}
	d.writeCheckpoints(func(err error) {
		if err != nil {
			d.finishClose(err)
			return
		}
		marker := d.join(cleanShutdownFile)
		d.do(node.WriteOp(marker, 0, nil), nil)
		d.do(node.SyncOp(marker), nil)
		d.do(node.SyncDirOp(d.path), func(ev node.Event) {
			if ev.Err != nil {
				d.fail(fmt.Errorf("syncdir %s: %w", d.path, ev.Err))
				return
			}
			d.finishClose(d.failed)
		})
	})
}

func (d *Dir) finishClose(err error) {
	if d.state != dirClosing {
		return
	}
	d.state = dirClosed
	for _, l := range d.sorted {
		l.close(ErrClosed)
	}
	if err != nil {
		err = ErrStorage
	}
	cbs := d.closeCBs
	d.closeCBs = nil
	for _, cb := range cbs {
		cb(err)
	}
}
