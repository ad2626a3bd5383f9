package partlog

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"herd/node"
)

// scanChunk is the read size of a recovery scan: big enough that a scan
// runs at disk speed, small enough that resident memory stays flat.
const scanChunk = 8 << 20

// scan reads a segment from a position to fileSize, checking every batch
// (length, magic, CRC, count, offsets continuing densely) and tracking it in
// seg's indexes and bookkeeping. It stops at the first byte that is not such
// a batch: bad is set and seg.size is where the valid data ends. done gets
// only disk errors; damage is reported through bad.
type scan struct {
	l        *Log
	seg      *segment // base, next, size describe the valid prefix so far
	fileSize int64
	// firstLast, when >= 0, is the last offset of the batch the scan starts
	// at (resuming at an index entry whose position is trusted): the batch
	// must end there, and fixes where the offsets continue from.
	firstLast int64
	bad       bool
	done      func(err error)
}

func (sc *scan) run(from int64) {
	l, seg := sc.l, sc.seg
	area := &segment{base: seg.base, size: sc.fileSize}
	w := &walker{l: l, seg: area, want: scanChunk}
	interval, maxEntries := l.cfg.IndexIntervalBytes, l.maxIndexEntries()
	w.visit = func(w *walker, b []byte) bool {
		pos := w.filePos() - int64(len(b))
		h, err := parseBatchCRC(b, l.d.h.Bug != BugServeTorn)
		ok := err == nil && pos <= math.MaxInt32 && h.lastOffset()-seg.base <= math.MaxInt32
		if ok && sc.firstLast >= 0 {
			ok = h.lastOffset() == sc.firstLast && h.baseOffset >= seg.base
			sc.firstLast = -1
			if ok {
				seg.next = h.baseOffset
			}
		}
		if !ok || h.baseOffset != seg.next {
			sc.bad = true
			sc.done(nil)
			return false
		}
		seg.track(&h, pos, interval, maxEntries)
		seg.size = pos + int64(len(b))
		seg.next = h.nextOffset()
		return true
	}
	w.end = func(err error) {
		if errors.Is(err, ErrCorrupt) {
			sc.bad, err = true, nil
		}
		sc.done(err)
	}
	seg.size = from
	w.start(from)
}

// opener runs OpenDir: list, read checkpoints, finish interrupted deletions,
// recover each partition in turn, then make the result durable.
type opener struct {
	d        *Dir
	done     func(*Dir, error)
	finished bool

	clean            bool
	rps, starts, hws map[TopicPartition]int64
	parts            []node.DirEntry
	deletes          []string
	ckptSizes        map[string]int64
	// leftovers are deletions a crash or Close interrupted: once the Dir is
	// open the trash empties them step by step (a topic's segments may be
	// gigabytes; removed whole they would stall every fsync on the disk).
	leftovers            []leftover
	pendingCheckpointIOs int
}

// OpenDir recovers every partition log under path (created if missing) and
// calls done with the Dir once all are ready to serve. Without a clean
// shutdown marker, every segment from the one holding the recovery point on
// is scanned and verified, and the log is cut at the first torn or bad byte;
// everything kept is fsynced before the Dir is handed out. Damage is never
// an error (it is truncated); a failing disk operation is (ErrStorage).
func OpenDir(h Host, path string, defaults Config, done func(*Dir, error)) {
	d := &Dir{
		h: h, path: path, defaults: normalize(defaults),
		logs: map[TopicPartition]*Log{}, busy: map[TopicPartition]bool{},
	}
	d.trash = d.newTrash()
	o := &opener{d: d, done: done, ckptSizes: map[string]int64{}}
	if path == "" {
		o.list()
		return
	}
	d.do(node.MkdirOp(path), func(ev node.Event) {
		if ev.Err != nil && !errors.Is(ev.Err, node.ErrExist) {
			o.fail(fmt.Errorf("mkdir %s: %w", path, ev.Err))
			return
		}
		// "Already exists" proves nothing: a killed predecessor may have
		// created it without syncing its parent.
		o.step(node.SyncDirOp(node.Dir(path)), func(node.Event) { o.list() })
	})
}

type leftover struct {
	dir       string
	files     []string
	removeDir bool // a <topic>-<partition>.<tag>-delete directory
}

func (o *opener) fail(err error) {
	if o.finished {
		return
	}
	o.finished = true
	o.d.state = dirClosed
	if o.d.failed == nil {
		o.d.failed = fmt.Errorf("%w: %v", ErrStorage, err)
	}
	o.d.logf("opening %q failed: %v", o.d.path, err)
	o.done(nil, o.d.failed)
}

// step submits op and continues with fn if it and everything before it
// succeeded.
func (o *opener) step(op node.DiskOp, fn func(ev node.Event)) {
	o.d.do(op, func(ev node.Event) {
		if ev.Err != nil {
			o.fail(fmt.Errorf("%v %s: %w", op.Kind, op.Path, ev.Err))
			return
		}
		if o.d.failed != nil {
			o.fail(o.d.failed)
			return
		}
		if !o.finished {
			fn(ev)
		}
	})
}

func (o *opener) list() {
	d := o.d
	o.step(node.ListOp(d.path), func(ev node.Event) {
		var ckpts []node.DirEntry
		for _, e := range ev.Entries {
			switch {
			case e.IsDir && strings.HasSuffix(e.Name, deleteDirSuffix):
				o.deletes = append(o.deletes, e.Name)
			case e.IsDir:
				if _, ok := parsePartitionDirName(e.Name); ok {
					o.parts = append(o.parts, e)
				}
			case e.Name == cleanShutdownFile:
				o.clean = true
			case e.Name == recoveryPointFile || e.Name == logStartFile || e.Name == highWatermarkFile:
				ckpts = append(ckpts, e)
			case strings.HasSuffix(e.Name, tmpSuffix):
				d.do(node.RemoveOp(d.join(e.Name)), nil)
			}
		}
		if len(ckpts) == 0 {
			o.deleteNext(0)
			return
		}
		for k, e := range ckpts {
			o.step(node.ReadOp(d.join(e.Name), 0, int(min(e.Size, node.MaxReadLen))), func(ev node.Event) {
				m, ok := decodeCheckpoint(ev.Data)
				if !ok {
					d.logf("checkpoint %s is malformed; ignoring it", e.Name)
					m = nil
				}
				switch e.Name {
				case recoveryPointFile:
					o.rps = m
				case logStartFile:
					o.starts = m
				case highWatermarkFile:
					o.hws = m
				}
				if k == len(ckpts)-1 {
					o.deleteNext(0)
				}
			})
		}
	})
}

// deleteNext lists the partition deletions a crash or Close interrupted,
// for the trash.
func (o *opener) deleteNext(i int) {
	if i == len(o.deletes) {
		o.recoverNext(0)
		return
	}
	dir := o.d.join(o.deletes[i])
	o.step(node.ListOp(dir), func(ev node.Event) {
		lo := leftover{dir: dir, removeDir: true}
		for _, e := range ev.Entries {
			lo.files = append(lo.files, dir+"/"+e.Name)
		}
		o.leftovers = append(o.leftovers, lo)
		o.deleteNext(i + 1)
	})
}

// removeLeftovers hands the deletions a crash or Close interrupted to the
// trash, once the Dir is open.
func (o *opener) removeLeftovers() {
	for _, lo := range o.leftovers {
		o.d.trash.Adopt(lo.dir, lo.files, lo.removeDir)
	}
	o.leftovers = nil
}

func (o *opener) recoverNext(i int) {
	if o.finished {
		return
	}
	if i == len(o.parts) {
		o.finish()
		return
	}
	tp, _ := parsePartitionDirName(o.parts[i].Name)
	lr := &logRecovery{o: o, l: newLog(o.d, tp, [16]byte{}, map[string]string{}, o.d.defaults)}
	lr.done = func() {
		o.d.insert(lr.l)
		o.recoverNext(i + 1)
	}
	lr.start()
}

// finish makes the recovered state durable, removes the clean-shutdown
// marker (before anything new is appended, or a later crash would be
// mistaken for a clean stop), rewrites the checkpoints (dropping entries of
// logs that no longer exist) and hands out the Dir.
func (o *opener) finish() {
	d := o.d
	if o.clean {
		d.do(node.RemoveOp(d.join(cleanShutdownFile)), nil)
	}
	o.step(node.SyncDirOp(d.path), func(node.Event) {
		d.writeCheckpoints(func(err error) {
			if err != nil {
				o.fail(err)
				return
			}
			if o.finished {
				return
			}
			o.finished = true
			d.state = dirOpen
			d.lastCkpt = d.h.Now()
			for _, l := range d.sorted {
				l.checkInvariants()
			}
			o.removeLeftovers()
			o.done(d, nil)
		})
	})
}

// logRecovery recovers one partition directory.
type logRecovery struct {
	o    *opener
	l    *Log
	done func()

	segs       []*segment
	indexSizes map[string]int64 // index file name -> size
	scanned    []*segment       // scanned now: their files get fsynced
	rp         int64            // checkpointed recovery point, -1 if unknown
}

func (lr *logRecovery) start() {
	l, o := lr.l, lr.o
	lr.rp = -1
	if v, ok := o.rps[l.tp]; ok {
		lr.rp = v
	}
	lr.indexSizes = map[string]int64{}
	o.step(node.ListOp(l.path), func(ev node.Event) {
		var meta, over *node.DirEntry
		logs := map[int64]bool{}
		for _, e := range ev.Entries {
			if base, ok := parseSegmentName(e.Name, logSuffix); ok && !e.IsDir {
				logs[base] = true
			}
		}
		for k := range ev.Entries {
			e := &ev.Entries[k]
			if e.IsDir {
				continue
			}
			if base, ok := parseSegmentName(e.Name, logSuffix); ok {
				lr.segs = append(lr.segs, &segment{base: base, next: base, size: e.Size, maxTS: -1, maxTSOffset: -1, sealed: true})
				continue
			}
			idxBase, isIdx := parseSegmentName(e.Name, indexSuffix)
			tidxBase, isTidx := parseSegmentName(e.Name, timeIndexSuffix)
			switch {
			case e.Name == partitionMetaFile:
				meta = e
			case e.Name == topicOverridesFile:
				over = e
			case isIdx && logs[idxBase], isTidx && logs[tidxBase]:
				lr.indexSizes[e.Name] = e.Size
			case strings.HasSuffix(e.Name, deletedSuffix):
				// A segment's file retention was emptying: the trash
				// goes on with it once the Dir is open.
				o.leftovers = append(o.leftovers, leftover{dir: l.path, files: []string{l.file(e.Name)}})
			case isIdx, isTidx, strings.HasSuffix(e.Name, tmpSuffix),
				strings.HasSuffix(e.Name, ".cleaned"), strings.HasSuffix(e.Name, ".swap"):
				// Leftovers: a deletion or rewrite that a crash interrupted,
				// or the index of a segment that is gone.
				l.d.do(node.RemoveOp(l.file(e.Name)), nil)
				l.namesDirty = true
			}
		}
		lr.readMeta(meta, over)
	})
}

func (lr *logRecovery) readMeta(meta, over *node.DirEntry) {
	l, o := lr.l, lr.o
	if meta != nil {
		o.step(node.ReadOp(l.file(meta.Name), 0, int(min(meta.Size, 4096))), func(ev node.Event) {
			id, ok := decodePartitionMetadata(ev.Data)
			if !ok {
				l.d.logf("%s: %s is malformed; topic id unknown", l.name(), partitionMetaFile)
			}
			l.topicID = id
		})
	}
	if over != nil {
		o.step(node.ReadOp(l.file(over.Name), 0, int(min(over.Size, 1<<20))), func(ev node.Event) {
			m, ok := decodeOverrides(ev.Data)
			if !ok {
				l.d.logf("%s: %s is malformed; using the broker defaults", l.name(), topicOverridesFile)
				return
			}
			cfg, err := applyOverrides(l.d.defaults, m)
			if err != nil {
				l.d.logf("%s: %v; using the broker defaults", l.name(), err)
				cfg = l.d.defaults
			}
			l.overrides, l.cfg = m, cfg
		})
	}
	// The reads above complete before this no-op does.
	o.step(node.StatOp(l.path), func(node.Event) { lr.segments() })
}

func (lr *logRecovery) segments() {
	l, o := lr.l, lr.o
	startCkpt := int64(-1)
	if v, ok := o.starts[l.tp]; ok {
		startCkpt = v
	}
	// Segments wholly below the log start offset were condemned by
	// retention before the crash made their removal undone.
	for len(lr.segs) > 1 && lr.segs[1].base <= startCkpt {
		lr.removeSegmentFiles(lr.segs[0])
		lr.segs = lr.segs[1:]
	}
	if len(lr.segs) == 0 {
		// Never leave a log without a file naming its end offset; start
		// no lower than anything the checkpoints say was there.
		base := max(startCkpt, lr.rp, o.hws[l.tp], 0)
		s := newSegment(base)
		s.sealed = true
		lr.segs = []*segment{s}
		l.d.do(node.WriteOp(l.segFile(s, logSuffix), 0, nil), nil)
		l.namesDirty = true
	}
	lr.segment(0)
}

func (lr *logRecovery) removeSegmentFiles(s *segment) {
	l := lr.l
	l.d.do(node.RemoveOp(l.segFile(s, logSuffix)), nil)
	for _, suffix := range []string{indexSuffix, timeIndexSuffix} {
		if _, ok := lr.indexSizes[segmentName(s.base, suffix)]; ok {
			l.d.do(node.RemoveOp(l.segFile(s, suffix)), nil)
		}
	}
	l.namesDirty = true
}

// segment recovers segment i: trusted ones (wholly below the recovery
// point, or any after a clean shutdown) from their index files, the rest by
// a full scan.
func (lr *logRecovery) segment(i int) {
	if lr.o.finished {
		return
	}
	if i == len(lr.segs) {
		lr.finish()
		return
	}
	if i > 0 && lr.segs[i].base != lr.segs[i-1].next {
		// Offsets would not be dense across the boundary (the previous
		// segment scanned shorter than its successor's name says): the log
		// ends with the previous segment.
		lr.l.d.logf("%s: segment %d does not continue offset %d; dropping it and later ones",
			lr.l.name(), lr.segs[i].base, lr.segs[i-1].next)
		lr.dropFrom(i)
		lr.segment(i)
		return
	}
	last := i == len(lr.segs)-1
	trusted := lr.o.clean || (!last && lr.segs[i+1].base <= lr.rp)
	switch {
	case trusted && !last:
		lr.loadSealed(i)
	case trusted && last:
		lr.loadActive(i)
	default:
		lr.rescan(i, "")
	}
}

// loadSealed takes a trusted sealed segment's largest timestamp from the
// last entry of its time index; a missing or malformed index means a scan.
func (lr *logRecovery) loadSealed(i int) {
	l, o := lr.l, lr.o
	s, next := lr.segs[i], lr.segs[i+1].base
	isz, ok1 := lr.indexSizes[segmentName(s.base, indexSuffix)]
	tsz, ok2 := lr.indexSizes[segmentName(s.base, timeIndexSuffix)]
	if !ok1 || !ok2 || isz%offsetEntrySize != 0 || tsz%timeEntrySize != 0 || s.size == 0 {
		lr.rescan(i, "index files missing or malformed")
		return
	}
	s.next = next
	if tsz == 0 {
		lr.segment(i + 1)
		return
	}
	o.step(node.ReadOp(l.segFile(s, timeIndexSuffix), tsz-timeEntrySize, timeEntrySize), func(ev node.Event) {
		es, ok := decodeTimeIndex(ev.Data, next-s.base)
		if !ok || len(es) != 1 {
			lr.rescan(i, "time index malformed")
			return
		}
		s.maxTS, s.maxTSOffset = es[0].ts, s.base+int64(es[0].rel)
		s.verifiedFrom = s.size // trusted, not scanned
		lr.segment(i + 1)
	})
}

// rescan scans segment i whole; why, if set, says why a trusted segment
// is not trusted after all.
func (lr *logRecovery) rescan(i int, why string) {
	s := lr.segs[i]
	if why != "" {
		lr.l.d.logf("%s: segment %d: %s; rescanning it", lr.l.name(), s.base, why)
	}
	size := s.size
	*s = *newSegment(s.base)
	s.size = size
	lr.scanSegment(i, 0, -1)
}

// loadActive loads the last segment's indexes after a clean shutdown and
// scans only the batches after the last index entry.
func (lr *logRecovery) loadActive(i int) {
	l, o := lr.l, lr.o
	s := lr.segs[i]
	isz, ok1 := lr.indexSizes[segmentName(s.base, indexSuffix)]
	tsz, ok2 := lr.indexSizes[segmentName(s.base, timeIndexSuffix)]
	if ok1 && isz == 0 {
		lr.rescan(i, "") // no index entry yet: the tail is the whole segment
		return
	}
	if !ok1 || !ok2 || isz > node.MaxReadLen || tsz > node.MaxReadLen {
		lr.rescan(i, "index files missing")
		return
	}
	var offData []byte
	o.step(node.ReadOp(l.segFile(s, indexSuffix), 0, int(isz)), func(ev node.Event) { offData = ev.Data })
	o.step(node.ReadOp(l.segFile(s, timeIndexSuffix), 0, int(tsz)), func(ev node.Event) {
		offs, ok1 := decodeOffsetIndex(offData, s.size, math.MaxInt32+1)
		times, ok2 := decodeTimeIndex(ev.Data, math.MaxInt32+1)
		if !ok1 || !ok2 || len(offs) == 0 {
			lr.rescan(i, "index files malformed")
			return
		}
		size := s.size
		*s = *newSegment(s.base)
		s.size = size
		s.ix = newSegIndex(offs, times)
		if n := len(times); n > 0 {
			s.maxTS, s.maxTSOffset = times[n-1].ts, s.base+int64(times[n-1].rel)
		}
		lastEntry := offs[len(offs)-1]
		// Trusted up to the last index entry; scanned from there on.
		s.verifiedFrom = int64(lastEntry.pos)
		lr.scanSegment(i, int64(lastEntry.pos), s.base+int64(lastEntry.rel))
	})
}

// scanSegment scans segment i from pos (0, or a trusted index entry whose
// batch ends at firstLast) to its end.
func (lr *logRecovery) scanSegment(i int, pos, firstLast int64) {
	l := lr.l
	s := lr.segs[i]
	sc := &scan{l: l, seg: s, fileSize: s.size, firstLast: firstLast}
	sc.done = func(err error) {
		if err != nil {
			lr.o.fail(fmt.Errorf("scanning %s: %w", l.segFile(s, logSuffix), err))
			return
		}
		if sc.bad && firstLast >= 0 && s.size == pos {
			// The trusted index pointed at something that is not the
			// batch it promised: scan the segment whole instead.
			lr.rescan(i, "index entry does not match the log")
			return
		}
		lr.scanned = append(lr.scanned, s)
		if sc.bad {
			l.d.logf("%s: segment %d invalid from byte %d of %d; truncating the log at offset %d",
				l.name(), s.base, s.size, sc.fileSize, s.next)
			l.d.do(node.TruncateOp(l.segFile(s, logSuffix), s.size), nil)
			lr.dropFrom(i + 1)
		}
		lr.segment(i + 1)
	}
	sc.run(pos)
}

// dropFrom removes segments i and later.
func (lr *logRecovery) dropFrom(i int) {
	for _, s := range lr.segs[i:] {
		lr.removeSegmentFiles(s)
	}
	clear(lr.segs[i:])
	lr.segs = lr.segs[:i]
}

// finish makes what was scanned durable (a killed predecessor leaves
// unsynced writes in the page cache, which must not be served as durable),
// writes fresh index files for scanned sealed segments, and installs the
// segments.
func (lr *logRecovery) finish() {
	l, o := lr.l, lr.o
	if len(lr.segs) == 0 {
		panic("partlog: recovery left no segment")
	}
	act := lr.segs[len(lr.segs)-1]
	for _, s := range lr.segs[:len(lr.segs)-1] {
		s.sealed = true
		if s.ix != nil {
			s.maybeTimeEntry()
			l.writeIndexFiles(s)
			s.indexDirty = true
			l.namesDirty = true
			s.ix = nil
		}
	}
	act.sealed = false
	if act.ix == nil {
		panic("partlog: active segment recovered without its index")
	}
	if !act.empty() {
		act.openedAt, act.hasOpened = l.d.h.Now(), true
	}
	for _, s := range lr.segs {
		if s.indexDirty {
			l.d.do(node.SyncOp(l.segFile(s, indexSuffix)), nil)
			l.d.do(node.SyncOp(l.segFile(s, timeIndexSuffix)), nil)
			s.indexDirty = false
		}
	}
	for _, s := range lr.scanned {
		l.d.do(node.SyncOp(l.segFile(s, logSuffix)), nil)
	}
	l.namesDirty = false
	o.step(node.SyncDirOp(l.path), func(node.Event) {
		l.segs = lr.segs
		if l.d.h.Bug == BugReuseOffset {
			// The planted bug: believe the checkpoint over the log. The
			// bytes past it stay; only the bookkeeping forgets them.
			if rp, ok := lr.o.rps[l.tp]; ok && rp < act.next && rp > act.base {
				act.next = rp
				if act.ix != nil {
					offs := slices.DeleteFunc(act.ix.offsets.all(), func(e indexEntry) bool { return act.base+int64(e.rel) >= rp })
					times := slices.DeleteFunc(act.ix.times.all(), func(e timeEntry) bool { return act.base+int64(e.rel) >= rp })
					act.ix = newSegIndex(offs, times)
				}
			}
		}
		leo := act.next
		start := act.base
		if len(l.segs) > 0 {
			start = l.segs[0].base
		}
		if v, ok := o.starts[l.tp]; ok && v > start {
			start = min(v, leo)
		}
		l.start, l.hw, l.recoveryPoint = start, leo, leo
		l.checkInvariants()
		l.d.logf("%s: recovered offsets [%d, %d) in %d segments (%d scanned)", l.name(), l.start, leo, len(l.segs), len(lr.scanned))
		lr.done()
	})
}
