package raft

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"herd/disk"
	"herd/node"
)

// diskEnv runs a core's disk operations on a simulated disk, each as it is
// submitted (so in submission order, the disk's FIFO), and hands their
// completions back through run. Any Env call a test does not expect
// panics on the nil interface.
type diskEnv struct {
	node.Env
	fs     *disk.SimFS
	next   node.OpID
	done   []node.Event
	halted string
	logs   []string
	sent   [][]byte
	ops    []node.DiskOp // every op submitted, in order
}

func (e *diskEnv) Disk(op node.DiskOp) node.OpID {
	e.next++
	e.ops = append(e.ops, op)
	op.Background = false // done at once, so in order anyway
	e.done = append(e.done, disk.Exec(e.fs, e.next, op))
	return e.next
}
func (e *diskEnv) Halt(reason string)                     { e.halted = reason }
func (e *diskEnv) Logf(f string, args ...any)             { e.logs = append(e.logs, fmt.Sprintf(f, args...)) }
func (e *diskEnv) Dial(string) node.ConnID                { return 1 }
func (e *diskEnv) SetTimer(node.TimerName, time.Duration) {}
func (e *diskEnv) CancelTimer(node.TimerName)             {}
func (e *diskEnv) Now() node.Time                         { return 0 }
func (e *diskEnv) Recycle([]byte)                         {}
func (e *diskEnv) Rand() *node.Rand                       { return node.NewRand(&countingSource{}) }

// run delivers completions until none is left.
func (e *diskEnv) run(r *Raft) {
	for len(e.done) > 0 && e.halted == "" {
		ev := e.done[0]
		e.done = e.done[1:]
		r.Handle(ev)
	}
}

func (e *diskEnv) write(t *testing.T, path string, data []byte) {
	t.Helper()
	for _, op := range []node.DiskOp{node.WriteOp(path, 0, data), node.SyncOp(path)} {
		if ev := disk.Exec(e.fs, 0, op); ev.Err != nil {
			t.Fatal(ev.Err)
		}
	}
}

// TestInstalledSnapshotVoidsOlderLog: a follower installed its leader's
// snapshot at index 8 in place of a log that disagreed with it there, and
// crashed before the segment that follows the snapshot existed. Its older
// segment still holds entries 9 and 10 of a deposed leader's term 3, whose
// zxids and terms continue the snapshot's (term 2) in order, so nothing
// but the snapshot's voids-older-log flag says they are not the log's:
// recovery must start the log after the snapshot. Without the flag they
// are grafted onto it (the second case): the consensus and keeper sweeps
// never reached this crash (dropping the flag fails none of 3,000 seeds),
// so this is what shows the flag does its work.
func TestInstalledSnapshotVoidsOlderLog(t *testing.T) {
	for _, c := range []struct {
		name  string
		voids bool
		last  Index
	}{{"flagged", true, 8}, {"unflagged", false, 10}} {
		t.Run(c.name, func(t *testing.T) {
			env := &diskEnv{fs: disk.NewSimFS()}
			if ev := disk.Exec(env.fs, 0, node.MkdirOp("raft")); ev.Err != nil {
				t.Fatal(ev.Err)
			}
			recs := appendSegmentRec(nil, segmentInfo{Seq: 1, FirstIndex: 1})
			for i := Index(1); i <= 10; i++ {
				term, n := Term(1), uint32(i)
				if i >= 8 {
					term, n = 3, uint32(i-7)
				}
				recs = appendEntryRec(recs, &Entry{Index: i, Term: term, Zxid: MakeZxid(term, n), Type: EntryNormal})
			}
			env.write(t, "raft/"+segmentName(1, 1), encodeBatch(nil, 0, recs))
			meta := snapMeta{Index: 8, Term: 2, Zxid: MakeZxid(2, 5), VoidsOlderLog: c.voids, WALSeq: 2}
			env.write(t, "raft/"+snapshotName(8), encodeSnapshot(meta, []byte("state")))

			sm := &applyRecorder{}
			r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, sm, Hooks{})
			r.Start()
			env.run(r)
			if env.halted != "" {
				t.Fatalf("halted: %s", env.halted)
			}
			if !r.ready {
				t.Fatal("recovery did not finish")
			}
			if r.log.snapIndex != 8 || r.log.lastIndex() != c.last || r.abstain {
				t.Fatalf("log after snapshot %d ends at %d (abstain %v); want snapshot 8, last %d, not abstaining; log:\n%s",
					r.log.snapIndex, r.log.lastIndex(), r.abstain, c.last, strings.Join(env.logs, "\n"))
			}
		})
	}
}

func (e *diskEnv) Send(c node.ConnID, data []byte)                   { e.sent = append(e.sent, data) }
func (e *diskEnv) SendAfter(c node.ConnID, data []byte, _ node.OpID) { e.sent = append(e.sent, data) }

// pieceRecorder is a state machine restored a piece at a time
// (IncrementalRestore) that records what it was given.
type pieceRecorder struct {
	applyRecorder
	writes    int
	image     []byte
	installed Index
}

func (p *pieceRecorder) BeginRestore(size int64) SnapshotDecoder {
	p.image = nil
	return p
}

func (p *pieceRecorder) Write(b []byte) error {
	p.writes++
	p.image = append(p.image, b...)
	return nil
}

func (p *pieceRecorder) Install(index Index, zxid Zxid) error {
	p.installed = index
	return nil
}

// TestStreamedInstall: a follower whose state machine restores a piece at
// a time receives its leader's snapshot in chunks that cut the file's
// header: each chunk reaches the decoder as it comes, the image is
// installed once whole, and the file it commits carries the follower's own
// flags (it had no log, so the snapshot voids older segments; the WAL
// sequence is its own, not the leader's) with the leader's image. A chunk
// damaged on the way fails the transfer and leaves no file behind.
func TestStreamedInstall(t *testing.T) {
	image := []byte("the state machine's image, in pieces")
	leaders := snapMeta{Index: 8, Term: 1, Zxid: MakeZxid(1, 8), WALSeq: 77}
	file := encodeSnapshot(leaders, image)
	for _, damaged := range []bool{false, true} {
		env := &diskEnv{fs: disk.NewSimFS()}
		sm := &pieceRecorder{}
		r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, sm, Hooks{})
		r.Start()
		env.run(r)
		if !r.ready {
			t.Fatalf("recovery did not finish: %s", env.halted)
		}
		const chunk = 10
		for off := 0; off < len(file); off += chunk {
			data := append([]byte(nil), file[off:min(off+chunk, len(file))]...)
			if damaged && off == 70 {
				data[0] ^= 1
			}
			r.step(&message{typ: mSnap, from: 1, term: 1, snapIndex: 8, offset: uint64(off), total: uint64(len(file)), data: data, done: off+chunk >= len(file)})
			env.run(r)
		}
		if env.halted != "" {
			t.Fatalf("damaged %v: halted: %s", damaged, env.halted)
		}
		names, err := env.fs.List("raft")
		if err != nil {
			t.Fatal(err)
		}
		var files []string
		for _, n := range names {
			files = append(files, n.Name)
		}
		if damaged {
			if sm.installed != 0 || r.applied != 0 || slices.ContainsFunc(files, func(n string) bool { return strings.HasPrefix(n, "snap-") }) {
				t.Fatalf("a damaged transfer was installed (index %d, applied %d) or left files %v", sm.installed, r.applied, files)
			}
			continue
		}
		if sm.installed != 8 || string(sm.image) != string(image) || sm.writes < 2 || r.applied != 8 {
			t.Fatalf("installed %d, applied %d, image %q in %d writes; want 8, %q in several", sm.installed, r.applied, sm.image, sm.writes, image)
		}
		got, err := env.fs.ReadAt("raft/"+snapshotName(8), 0, 1<<20)
		if err != nil {
			t.Fatalf("%v; files %v", err, files)
		}
		meta, data, err := decodeSnapshot(got)
		if err != nil || string(data) != string(image) || meta.Index != 8 || !meta.VoidsOlderLog || meta.WALSeq == leaders.WALSeq {
			t.Fatalf("committed file: %+v %q %v; want index 8, voids older log, this server's WAL sequence, the image", meta, data, err)
		}
		if slices.ContainsFunc(files, func(n string) bool { return strings.HasSuffix(n, ".tmp") }) {
			t.Fatalf("files left: %v", files)
		}
	}
}

// TestHalfReceivedSnapshotDroppedOnNewTerm: a transfer the last term's
// leader left half done is dropped, with its file, when a new term begins;
// kept, it would block every local snapshot.
func TestHalfReceivedSnapshotDroppedOnNewTerm(t *testing.T) {
	env := &diskEnv{fs: disk.NewSimFS()}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, &pieceRecorder{}, Hooks{})
	r.Start()
	env.run(r)
	file := encodeSnapshot(snapMeta{Index: 8, Term: 1, Zxid: MakeZxid(1, 8)}, make([]byte, 100))
	r.step(&message{typ: mSnap, from: 1, term: 1, snapIndex: 8, total: uint64(len(file)), data: file[:80]})
	env.run(r)
	if r.st.recv == nil {
		t.Fatal("no transfer in progress after its first chunk")
	}
	r.becomeFollower(2, 3)
	env.run(r)
	names, _ := env.fs.List("raft")
	for _, n := range names {
		if strings.HasSuffix(n.Name, ".tmp") {
			t.Fatalf("file %s left", n.Name)
		}
	}
	if r.st.recv != nil {
		t.Fatal("the half-received snapshot is still held in the new term")
	}
}

// The disk worker runs ahead of the loop: ops queued behind a failed one
// take effect before the core learns of the failure (diskEnv executes each
// op as it is submitted). A snapshot whose image failed to be written or
// synced must then not be renamed to its live name: before, the rename was
// queued with the write and ran all the same, and the restarted server
// found a damaged snapshot and abstained, lossy by its own hand.
func TestFailedSnapshotLeavesNoLiveFile(t *testing.T) {
	for _, kind := range []node.DiskOpKind{node.OpWrite, node.OpSync} {
		t.Run(kind.String(), func(t *testing.T) {
			fs := disk.NewSimFS()
			walWithHints(t, &diskEnv{fs: fs}, 1, 20, 0)
			r, env := recoverOn(fs)
			if !r.ready || r.applied != 20 {
				t.Fatalf("recovery: ready %v, applied %d (halted %q)", r.ready, r.applied, env.halted)
			}
			env.fs.FailNext(kind, nil)
			meta := snapMeta{Index: 20, Term: 1, Zxid: MakeZxid(1, 20)}
			r.st.saveSnapshot(meta, encodeSnapshot(meta, make([]byte, 100)))
			env.run(r)
			if env.halted == "" {
				t.Fatalf("a failed snapshot %s did not halt the server", kind)
			}
			if _, err := env.fs.Stat("raft/" + snapshotName(20)); err == nil {
				t.Errorf("the snapshot whose %s failed is under its live name", kind)
			}
			r2, env2 := recoverOn(env.fs)
			if !r2.ready || r2.abstain {
				t.Errorf("restart: ready %v, abstain %v (halted %q, logs %q)", r2.ready, r2.abstain, env2.halted, env2.logs)
			}
		})
	}
}

// A snapshot installed from the leader that voids the older log is renamed
// to its live name only once synced (TestFailedSnapshotLeavesNoLiveFile),
// and until then no WAL batch is queued: a segment of the entries after it
// durable before the snapshot would be grafted onto the voided log at the
// next recovery. Here the entries after the snapshot arrive while its sync
// is queued; their batch must come after the rename.
func TestVoidingInstallHoldsTheWAL(t *testing.T) {
	env := &diskEnv{fs: disk.NewSimFS()}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, &pieceRecorder{}, Hooks{})
	r.Start()
	env.run(r)
	file := encodeSnapshot(snapMeta{Index: 8, Term: 1, Zxid: MakeZxid(1, 8)}, make([]byte, 100))
	r.step(&message{typ: mSnap, from: 1, term: 1, snapIndex: 8, total: uint64(len(file)), data: file, done: true})
	r.step(&message{typ: mApp, from: 1, term: 1, prevIndex: 8, prevTerm: 1, commit: 8, commitTerm: 1,
		entries: []Entry{{Index: 9, Term: 1, Zxid: MakeZxid(1, 9), Type: EntryNormal}}})
	r.Flush()
	env.run(r)
	if env.halted != "" || r.log.lastIndex() != 9 {
		t.Fatalf("halted %q, last %d", env.halted, r.log.lastIndex())
	}
	synced, rename, wal := -1, -1, -1
	for i, op := range env.ops {
		switch {
		case op.Kind == node.OpSync && strings.Contains(op.Path, snapshotName(8)):
			synced = i
		case op.Kind == node.OpRename && strings.HasSuffix(op.Path2, snapshotName(8)):
			rename = i
		case op.Kind == node.OpWrite && strings.Contains(op.Path, "wal-") && synced >= 0 && wal < 0:
			wal = i // the first batch after the snapshot's sync
		}
	}
	if synced < 0 || rename < 0 || wal < 0 || wal < rename {
		t.Errorf("the snapshot's sync is op %d, its rename %d, the next WAL write %d: the batch must come after the rename", synced, rename, wal)
	}
}

// Recovery records damage in the state file (abstain) before it removes
// the segments after the damage, and must not queue the removal until the
// state file is known durable: the disk runs the ops queued behind a failed
// one before the loop learns of it (diskEnv executes each op as it is
// submitted). Before, a failed state file write was followed by the
// removal all the same, and the next start found neither the damage nor
// the abstention.
func TestRecoveryKeepsEvidenceUntilAbstentionIsDurable(t *testing.T) {
	fs := disk.NewSimFS()
	walWithHints(t, &diskEnv{fs: fs}, 3, 10, 0)
	if err := fs.Corrupt("raft/"+segmentName(2, 11), 200, 3); err != nil {
		t.Fatal(err)
	}
	fs.FailNext(node.OpWrite, nil) // recovery's first write: the state file
	_, env := recoverOn(fs)
	if env.halted == "" {
		t.Fatal("a failed state file write did not halt the recovery")
	}
	if _, err := env.fs.Stat("raft/" + segmentName(3, 21)); err != nil {
		t.Errorf("the segment after the damage was removed before the abstention was durable: %v", err)
	}
	r2, env2 := recoverOn(fs)
	if !r2.ready || !r2.abstain {
		t.Errorf("restart: ready %v, abstain %v; the damage must still be known (halted %q, logs %q)", r2.ready, r2.abstain, env2.halted, env2.logs)
	}
}

// recoverOn starts server 2 of three on fs with a heldAtApply state machine
// and delivers completions until none is left (or it halted).
func recoverOn(fs *disk.SimFS) (*Raft, *diskEnv) {
	env := &diskEnv{fs: fs}
	r := New(env, Config{ID: 2, Peers: []Peer{{ID: 1, Addr: "a"}, {ID: 2, Addr: "b"}, {ID: 3, Addr: "c"}}}, &heldAtApply{}, Hooks{})
	r.sm.(*heldAtApply).r = r
	r.Start()
	env.run(r)
	return r, env
}
