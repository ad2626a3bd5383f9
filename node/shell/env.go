package shell

import (
	"context"
	"sync"
	"time"

	"herd/disk"
	"herd/node"
)

// env is the node.Env handed to the core. Its methods run on the loop's
// holder (Shell.core), inside Step (or inside a Do callback). After Halt they do
// nothing: the node is exiting, and its last Step must not start work that
// would outlive it.
type env struct{ s *Shell }

var _ node.Env = env{}

func (e env) Now() node.Time   { return node.Time(time.Since(e.s.start)) }
func (e env) WallClock() int64 { return time.Now().UnixMilli() }
func (e env) Rand() *node.Rand { return e.s.rand }

func (e env) Logf(format string, args ...any) { e.s.logf(format, args...) }

func (e env) Dial(addr string) node.ConnID {
	s := e.s
	s.nextConn++
	c := newConn(s, s.nextConn)
	if s.halted {
		return c.id
	}
	ctx, cancel := context.WithTimeout(s.dialCtx, s.cfg.DialTimeout)
	c.cancelDial = cancel
	s.conns[c.id] = c
	s.spawn(func() { s.dial(ctx, c, addr) })
	return c.id
}

func (e env) Send(c node.ConnID, data []byte) {
	if !e.s.halted {
		e.s.gate.Send(c, data)
	}
}

func (e env) SendAfter(c node.ConnID, data []byte, op node.OpID) {
	if !e.s.halted {
		e.s.gate.SendAfter(c, data, op)
	}
}

func (e env) Close(c node.ConnID) {
	if !e.s.halted {
		e.s.gate.Close(c)
	}
}

type timer struct {
	t   *time.Timer
	gen uint64
}

func (e env) SetTimer(name node.TimerName, d time.Duration) {
	s := e.s
	if s.halted {
		return
	}
	if old := s.timers[name]; old != nil {
		old.t.Stop()
	}
	// A fresh generation per arming: an expiry of the previous arming that
	// was already posted (Stop came too late) no longer matches and is
	// dropped by the loop.
	s.timerGen++
	gen := s.timerGen
	s.timers[name] = &timer{gen: gen, t: time.AfterFunc(max(d, 0), func() { s.timerFired(name, gen) })}
}

func (e env) CancelTimer(name node.TimerName) {
	s := e.s
	if t := s.timers[name]; t != nil {
		t.t.Stop()
		delete(s.timers, name)
	}
}

// timerFired runs on a goroutine of the time package. It joins wg only while
// shutdown has not begun, so that wg.Add never races with wg.Wait.
func (s *Shell) timerFired(name node.TimerName, gen uint64) {
	s.tmu.Lock()
	if s.tstopped {
		s.tmu.Unlock()
		return
	}
	s.wg.Add(1)
	s.tmu.Unlock()
	defer s.wg.Done()
	s.post(item{kind: itTimer, name: name, gen: gen})
}

type diskJob struct {
	id node.OpID
	op node.DiskOp
}

func (e env) Disk(op node.DiskOp) node.OpID {
	s := e.s
	s.nextOp++
	id := s.nextOp
	if s.halted {
		return id
	}
	if op.InBackground() {
		s.gate.SubmittedBackground(id, op.Kind)
	} else {
		s.gate.Submitted(id, op.Kind)
	}
	s.disk.push(diskJob{id: id, op: op})
	return id
}

// Recycle keeps a large frame's or read's buffer for the next one
// (framePool).
func (e env) Recycle(data []byte) { e.s.frames.put(data) }

// RecycleSent keeps the buffer once the connection's writer is past it.
func (e env) RecycleSent(c node.ConnID, data []byte) {
	if e.s.halted {
		return
	}
	e.s.gate.RecycleSent(c, data)
}

func (e env) Halt(reason string) {
	s := e.s
	if s.halted {
		return
	}
	s.halted = true
	s.haltReason = reason
}

// diskLane is a queue of disk jobs and the worker that runs them. The loop
// (or the disk worker, for the background lane) appends, the worker takes:
// a mutex and a slice rather than a channel so that pushing never blocks,
// however far behind the disk is.
type diskLane struct {
	mu   sync.Mutex
	q    []diskJob
	wake chan struct{}
}

func newDiskLane() *diskLane { return &diskLane{wake: make(chan struct{}, 1)} }

func (l *diskLane) push(j diskJob) {
	l.mu.Lock()
	l.q = append(l.q, j)
	l.mu.Unlock()
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// work runs the lane's jobs one at a time, in order, until the shell stops:
// run executes one and returns its completion, or false if it handed the
// job on instead.
func (s *Shell) work(l *diskLane, run func(diskJob) (node.Event, bool)) {
	var spare []diskJob
	for {
		// Swap the queue with the drained slice of the previous round: the
		// two backing arrays alternate and are never shared.
		l.mu.Lock()
		jobs := l.q
		l.q = spare[:0]
		l.mu.Unlock()
		spare = jobs
		if len(jobs) == 0 {
			select {
			case <-l.wake:
				continue
			case <-s.done:
				return
			}
		}
		for i := range jobs {
			// A stopped node issues no more I/O; the op already running
			// (the previous iteration) was allowed to finish.
			select {
			case <-s.done:
				return
			default:
			}
			ev, ran := run(jobs[i])
			jobs[i] = diskJob{} // do not pin the core's write buffers
			if ran && !s.postFrom(item{kind: itDisk, ev: &ev}, false) {
				return
			}
		}
	}
}

// diskWorker executes disk ops one at a time in submission order and posts
// their completions in the same order: the core and the SendGate both rely
// on "op N done" implying "every op before N done". A background op it
// reaches goes to the background lane, or runs here if the FS cannot run it
// apart; either way it starts after every op before it has completed and
// posted its completion, as Env.Disk promises.
func (s *Shell) diskWorker() {
	bs, _ := s.cfg.FS.(disk.BackgroundSyncer)
	s.work(s.disk, func(j diskJob) (node.Event, bool) {
		if bs != nil && j.op.InBackground() {
			s.bg.push(j)
			return node.Event{}, false
		}
		return disk.ExecInto(s.cfg.FS, j.id, j.op, s.frames.get), true
	})
}

// backgroundWorker runs the background ops the disk worker handed over, one
// at a time in the order it handed them, and posts their completions.
func (s *Shell) backgroundWorker(bs disk.BackgroundSyncer) {
	s.work(s.bg, func(j diskJob) (node.Event, bool) {
		return disk.ExecBackground(bs, j.id, j.op), true
	})
}
