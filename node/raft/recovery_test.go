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
}

func (e *diskEnv) Disk(op node.DiskOp) node.OpID {
	e.next++
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
