package shell

import (
	"context"
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
	if op.Background && op.Kind.IsDurabilityBarrier() {
		s.gate.SubmittedBackground(id, op.Kind)
	} else {
		s.gate.Submitted(id, op.Kind)
	}
	s.dmu.Lock()
	s.dq = append(s.dq, diskJob{id: id, op: op})
	s.dmu.Unlock()
	select {
	case s.dwake <- struct{}{}:
	default:
	}
	return id
}

func (e env) Halt(reason string) {
	s := e.s
	if s.halted {
		return
	}
	s.halted = true
	s.haltReason = reason
}

// diskWorker executes disk ops one at a time in submission order and posts
// their completions in the same order: the core and the SendGate both rely
// on "op N done" implying "every op before N done". A background op it
// reaches goes to the background lane, which an FS that cannot run it apart
// means running it here; either way it starts after every op before it has
// completed and posted its completion, as Env.Disk promises.
func (s *Shell) diskWorker() {
	bs, _ := s.cfg.FS.(disk.BackgroundSyncer)
	var spare []diskJob
	for {
		// Swap the queue with the drained slice of the previous round: the
		// two backing arrays alternate and are never shared.
		s.dmu.Lock()
		jobs := s.dq
		s.dq = spare[:0]
		s.dmu.Unlock()
		spare = jobs
		if len(jobs) == 0 {
			select {
			case <-s.dwake:
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
			if bs != nil && jobs[i].op.Background && jobs[i].op.Kind.IsDurabilityBarrier() {
				s.bmu.Lock()
				s.bq = append(s.bq, jobs[i])
				s.bmu.Unlock()
				select {
				case s.bwake <- struct{}{}:
				default:
				}
				continue
			}
			ev := disk.Exec(s.cfg.FS, jobs[i].id, jobs[i].op)
			jobs[i] = diskJob{} // do not pin the core's write buffers
			if !s.postFrom(item{kind: itDisk, ev: &ev}, false) {
				return
			}
		}
	}
}

// backgroundWorker runs the background ops the disk worker handed over, one
// at a time in the order it handed them, and posts their completions.
func (s *Shell) backgroundWorker(bs disk.BackgroundSyncer) {
	var spare []diskJob
	for {
		s.bmu.Lock()
		jobs := s.bq
		s.bq = spare[:0]
		s.bmu.Unlock()
		spare = jobs
		if len(jobs) == 0 {
			select {
			case <-s.bwake:
				continue
			case <-s.done:
				return
			}
		}
		for i := range jobs {
			select {
			case <-s.done:
				return
			default:
			}
			ev := disk.ExecBackground(bs, jobs[i].id, jobs[i].op)
			jobs[i] = diskJob{}
			if !s.postFrom(item{kind: itDisk, ev: &ev}, false) {
				return
			}
		}
	}
}
