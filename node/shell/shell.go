// Package shell is herd's production shell: it runs one core (a node.Machine)
// on real TCP sockets, real timers, the real clock and a disk.FS.
//
// The core stays single-threaded. Everything that happens in the world (an
// accepted or dialed connection, bytes read, a timer expiring, a disk
// operation completing) is observed by a goroutine of its own and posted into
// one event loop, which hands the events to Machine.Step one at a time. The
// Env methods the core calls inside Step only record intent (append to a
// connection's send queue, arm a timer, queue a disk op); nothing blocks the
// loop.
//
// The semantics mirror the simulator's (netsim, disk.SimFS): the same Event
// kinds and errors, per-connection byte order, in-order disk completions,
// one pending timer per name, SendAfter through the shared node.SendGate.
// Where a real network leaves a choice open, the shell does what netsim does:
//
//   - Closing a connection that is still dialing drops what was queued on
//     it; if the dial completes anyway the socket is aborted (the peer sees a
//     reset), and the core hears nothing more of it.
//   - A peer's FIN ends the connection for the core (EvClosed{ErrEOF}); what
//     the core still had queued on it is dropped.
//   - Dial failures are ErrTimeout (the attempt ran out of time) or
//     ErrRefused (anything else: refused, unreachable, unresolvable), with
//     the OS error's text wrapped.
//   - A Send that would take the connection's queue past MaxSendQueueBytes
//     resets it. Production counts bytes the kernel has not accepted yet, so
//     the kernel's socket buffers add some slack the simulator does not have.
//
// Two behaviours have no simulator counterpart to copy. Env.Close flushes the
// queue, sends FIN, and keeps reading (and discarding) the peer's input until
// it closes or lingerTimeout passes, because closing a socket with unread
// input makes the kernel send RST, which can destroy the flushed data before
// the peer reads it. Env.Halt ends the Step normally, but the Env ignores
// every call made after it in that Step; queued disk ops that have not started
// are dropped, the one in progress finishes, and connections are aborted.
//
// Goroutines: one accept loop per listener, one dial goroutine per pending
// Dial, a reader and a writer per open connection, two disk workers (the
// second runs background syncs, if the FS can run them apart), and
// short-lived timer callbacks. All of them are tracked by one WaitGroup, post
// into the loop with a select on a done channel (so they never block once the
// loop stops), and are waited for before Run returns.
//
// Combining. "The loop" is a lock (Shell.core), not a goroutine: whoever
// holds it steps the core, and only its holder touches the core or the
// loop's state. A goroutine with an event to post (a reader with a frame, a
// timer, the accept loop) takes the lock if it is free and steps the core
// itself, then handles whatever others queued meanwhile and writes the
// replies; only when the lock is busy does it queue the event for the
// holder. A keeper read thus costs the reader's wakeup and nothing more,
// where handing each event to a loop goroutine cost a second thread wakeup
// (and, with an idle P, a third: Go wakes a spinning thread to steal the
// work) on a machine where a context switch is the dearest thing a request
// does. Order is kept per source: events are queued in a channel that only
// the lock's holder receives from, and a holder drains what is queued
// before stepping its own event, so an event never overtakes one its
// source queued earlier. A poster that queued because the lock was busy
// tries it again afterwards, and every holder looks at the queue again
// after unlocking, so nothing queued is left behind. The loop goroutine
// remains for Do, for the end of Run, and to take over from a holder that
// has handled combineBudget events (a reader must get back to its socket);
// the disk worker always hands its completions over that way, so that it
// starts the next operation instead of stepping the core.
package shell

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"herd/disk"
	"herd/node"
)

// Config configures a Shell.
type Config struct {
	// Name identifies the node in log lines.
	Name string
	// FS is the node's data directory. Required. The shell uses it from one
	// goroutine at a time and never closes it: close it after Run returns.
	FS disk.FS
	// Listen lists the addresses to listen on, e.g. "127.0.0.1:2181" or
	// "127.0.0.1:0" for a free port (see Shell.Addrs).
	Listen []string
	// Seed seeds Env.Rand; 0 draws a seed from crypto/rand (it is logged, so a
	// run can still be reproduced as far as randomness goes).
	Seed uint64
	// Log receives Env.Logf lines and the shell's own messages; nil discards
	// them.
	Log io.Writer
	// DialTimeout bounds each Env.Dial; default 3s.
	DialTimeout time.Duration
	// DialFrom, if set, is the local IP address dialed connections are
	// made from (the kernel picks the port), so that peers and packet
	// filters see a node's connections come from the address its
	// configuration names for it, not from whichever the route prefers
	// (on loopback, always 127.0.0.1).
	DialFrom string
	// DialUserTimeout, if positive, is set as TCP_USER_TIMEOUT on dialed
	// connections: data the peer has not acknowledged for that long (a
	// network dropping packets) aborts the connection, and the core sees
	// EvClosed and can dial again. Without it a socket retransmits for
	// about 15 minutes (tcp_retries2) at doubling intervals, so after a
	// long partition heals nothing crosses until its next retransmission,
	// seconds to minutes later; the simulator's network kills such a
	// connection after its retransmission timeout instead (netsim).
	DialUserTimeout time.Duration
	// MaxSendQueueBytes bounds the bytes queued on one connection and not yet
	// accepted by the kernel. A Send that would exceed it resets the
	// connection (EvClosed{ErrReset}), as the simulator does; a peer that
	// stops reading must not make the node run out of memory. Default 64 MiB.
	MaxSendQueueBytes int
	// FrameHint, if positive, says that the peers send frames made of a
	// 4-byte big-endian length and that many bytes (Kafka, ZooKeeper),
	// none longer than FrameHint. It changes only where the boundaries of
	// EvReceived data fall, never the bytes or their order: a frame
	// longer than the read buffer (and at most 16 MiB) is read straight
	// into a buffer of its own and delivered whole as one Data, so a core
	// that reassembles frames can keep it without copying, and a partial
	// frame that fits the read buffer is held until it is complete. A
	// length that breaks the hint (negative, or over FrameHint) turns the
	// hint off for that connection, which then delivers bytes as they
	// come. Use it only for protocols where a peer never stops mid-frame
	// to wait for an answer.
	FrameHint int
	// NoCombining makes every event go through the loop goroutine, as the
	// shell did before the goroutine that observes an event was let step
	// the core itself when nobody else is ("Combining" in the package
	// comment). A measuring knob: a core cannot tell the two apart.
	NoCombining bool
}

const (
	defaultDialTimeout       = 3 * time.Second
	defaultMaxSendQueueBytes = 64 << 20

	// eventQueueLen bounds the channel from the shell's goroutines into the
	// loop. When the core falls behind, readers block on it and stop reading,
	// so the kernel's receive window closes and TCP pushes back on the peer.
	eventQueueLen = 4096
	readBufSize   = 64 << 10
	// maxDirectFrame bounds the frames that Config.FrameHint reads into
	// a buffer of their own.
	maxDirectFrame = 16 << 20
	// maxBatch bounds the events the loop handles between two rounds of
	// socket writes, and so how long a reply waits in its queue.
	maxBatch = 64
	// combineBudget bounds the events one holder of the core lock handles
	// after its own before it passes the rest to the loop goroutine.
	combineBudget = 4 * maxBatch
	// acceptBackoff paces Accept after errors such as EMFILE, which would
	// otherwise spin.
	acceptBackoff = 50 * time.Millisecond
	// lingerTimeout bounds how long a connection the core closed keeps
	// draining the peer's input after our FIN. Closing a socket with unread
	// input makes the kernel send RST, which can destroy the replies we just
	// flushed before the peer reads them (TestCloseFlushes fails without
	// this); draining until the peer closes, or this long, avoids that.
	lingerTimeout = 5 * time.Second
)

// ErrNotRunning is returned by Do when the shell's loop has stopped (or was
// closed without running).
var ErrNotRunning = errors.New("shell: not running")

// HaltError is what Run returns when the core called Env.Halt.
type HaltError struct{ Reason string }

func (e *HaltError) Error() string { return "node halted: " + e.Reason }

// PanicError is what Run returns when the core (or the shell's own loop code)
// panicked. The shell has been shut down cleanly by the time it is returned.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("shell: core panicked: %v\n%s", e.Value, e.Stack)
}

type lifecycle uint8

const (
	stNew lifecycle = iota
	stRunning
	stDone
)

// Shell runs one core. Create it with New, then call Run once.
type Shell struct {
	cfg     Config
	factory node.Factory
	lns     []net.Listener
	addrs   []string
	seed    uint64

	mu    sync.Mutex // guards state
	state lifecycle

	// done is closed when the loop stops: every goroutine that posts into the
	// loop selects on it, so none can block forever.
	done   chan struct{}
	events chan item
	doCh   chan doReq
	wg     sync.WaitGroup

	// core is the loop: its holder steps the core and owns everything
	// below marked "the loop's". Only holders receive from events.
	core sync.Mutex
	// kick (cap 1) asks the loop goroutine to take the lock and handle
	// what is queued.
	kick chan struct{}
	// stopCh is closed when a holder stops the loop (halt, panic); the
	// loop goroutine then ends Run with stopErr. ctx is Run's.
	stopCh  chan struct{}
	ctx     context.Context
	stopped bool  // the loop's: no more Steps
	stopErr error // the loop's

	logMu sync.Mutex

	// The loop's (owned by whoever holds core).
	m          node.Machine
	gate       *node.SendGate
	frames     framePool
	rand       *node.Rand
	start      time.Time
	nextConn   node.ConnID
	conns      map[node.ConnID]*conn // connections the core may still use
	local      []node.Event          // events generated inside Step (resets)
	timers     map[node.TimerName]*timer
	timerGen   uint64
	nextOp     node.OpID
	halted     bool
	haltReason string
	dialFrom   net.Addr // Config.DialFrom, parsed
	dialCtx    context.Context
	dialCancel context.CancelFunc
	// dirty lists the connections Send queued data on since the loop last
	// wrote: the loop writes them itself before it waits (flushDirty).
	dirty []*conn
	iov   []syscall.Iovec

	// Timer callbacks run on goroutines of the time package; tmu/tstopped
	// let them join wg only while Run has not started waiting on it.
	tmu      sync.Mutex
	tstopped bool

	// The disk queue, and the background lane (node.DiskOp.Background) to
	// which the disk worker hands the background ops it reaches.
	disk, bg *diskLane

	// socks holds every connection whose reader/writer are still running,
	// including those the core closed and that are still lingering, so that
	// shutdown can abort them all.
	smu   sync.Mutex
	socks map[*conn]struct{}
}

// New checks cfg and binds the listeners, so address errors surface here and
// the actual ports are known (Addrs) before Run. A shell that will not be run
// must be released with Close.
func New(cfg Config, f node.Factory) (*Shell, error) {
	if cfg.FS == nil {
		return nil, errors.New("shell: Config.FS is required")
	}
	if f == nil {
		return nil, errors.New("shell: nil Factory")
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = defaultDialTimeout
	}
	if cfg.MaxSendQueueBytes <= 0 {
		cfg.MaxSendQueueBytes = defaultMaxSendQueueBytes
	}
	var dialFrom net.Addr
	if cfg.DialFrom != "" {
		ip := net.ParseIP(cfg.DialFrom)
		if ip == nil {
			return nil, fmt.Errorf("shell: DialFrom %q is not an IP address", cfg.DialFrom)
		}
		dialFrom = &net.TCPAddr{IP: ip}
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	s := &Shell{
		cfg:      cfg,
		factory:  f,
		dialFrom: dialFrom,
		seed:     cfg.Seed,
		done:     make(chan struct{}),
		events:   make(chan item, eventQueueLen),
		doCh:     make(chan doReq),
		kick:     make(chan struct{}, 1),
		stopCh:   make(chan struct{}),
		conns:    make(map[node.ConnID]*conn),
		timers:   make(map[node.TimerName]*timer),
		disk:     newDiskLane(),
		bg:       newDiskLane(),
		socks:    make(map[*conn]struct{}),
	}
	for _, a := range cfg.Listen {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			return nil, fmt.Errorf("shell %s: listen %s: %w", cfg.Name, a, err)
		}
		s.lns = append(s.lns, ln)
		s.addrs = append(s.addrs, ln.Addr().String())
	}
	if s.seed == 0 {
		var b [8]byte
		if _, err := crand.Read(b[:]); err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		s.seed = binary.LittleEndian.Uint64(b[:]) | 1
	}
	s.rand = node.NewRand(rand.NewPCG(s.seed, s.seed^0x9e3779b97f4a7c15))
	s.gate = node.NewSendGate(transport{s})
	return s, nil
}

// Addrs returns the bound listener addresses, in Config.Listen order.
func (s *Shell) Addrs() []string { return append([]string(nil), s.addrs...) }

// Seed returns the seed of Env.Rand (the drawn one if Config.Seed was 0).
func (s *Shell) Seed() uint64 { return s.seed }

// Close releases the listeners of a shell whose Run has not been called; Run
// fails afterwards. It does not stop a running shell (cancel Run's context).
func (s *Shell) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stNew:
		s.state = stDone
		close(s.done)
		for _, ln := range s.lns {
			ln.Close()
		}
		return nil
	case stRunning:
		return errors.New("shell: Close of a running shell; cancel Run's context instead")
	}
	return nil
}

// Run builds the core, delivers EvStart and then every event as it happens,
// until ctx is done (it returns nil), the core calls Env.Halt (*HaltError) or
// Step panics (*PanicError). Either way everything is shut down and every
// goroutine the shell started has exited before Run returns. Run may be
// called once.
func (s *Shell) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.state != stNew {
		s.mu.Unlock()
		return errors.New("shell: Run called twice or after Close")
	}
	s.state = stRunning
	s.mu.Unlock()

	s.start = time.Now()
	s.ctx = ctx
	s.dialCtx, s.dialCancel = context.WithCancel(context.Background())
	// Held until the core exists and has had EvStart: an early connection
	// must not find the loop free and no core in it.
	s.core.Lock()
	for i, ln := range s.lns {
		s.spawn(func() { s.acceptLoop(ln, s.addrs[i]) })
	}
	s.spawn(s.diskWorker)
	if bs, ok := s.cfg.FS.(disk.BackgroundSyncer); ok {
		s.spawn(func() { s.backgroundWorker(bs) })
	}
	s.logf("starting: listening on %s, seed %d", strings.Join(s.addrs, ","), s.seed)

	err := s.loop(ctx)
	switch e := err.(type) {
	case *HaltError:
		s.logf("halted: %s", e.Reason)
	case *PanicError:
		s.logf("core panicked: %v", e.Value)
	}
	s.shutdown()
	s.core.Unlock() // taken by loop; stopped stays true

	s.mu.Lock()
	s.state = stDone
	s.mu.Unlock()
	return err
}

// Do runs fn on the loop goroutine between two events and waits for it, so
// tests and tools can inspect (or drive, through the Env the core holds) the
// core without racing with Step. If Run has not started yet, Do waits for it.
// It returns ErrNotRunning once the loop has stopped, and an error if fn
// panics (the shell keeps running).
func (s *Shell) Do(fn func(m node.Machine)) error {
	req := doReq{fn: fn, done: make(chan error, 1)}
	select {
	case s.doCh <- req:
		// The loop always answers a request it has received.
		return <-req.done
	case <-s.done:
		return ErrNotRunning
	}
}

type doReq struct {
	fn   func(node.Machine)
	done chan error
}

type itemKind uint8

const (
	itAccepted itemKind = iota + 1
	itDialed
	itRecv
	itClosed
	itTimer
	itDisk
)

// item is what the shell's goroutines post into the loop.
type item struct {
	kind  itemKind
	c     *conn    // itDialed, itRecv, itClosed
	nc    net.Conn // itAccepted, itDialed (nil if the dial failed)
	local string   // itAccepted: the listener's address
	data  []byte   // itRecv
	err   error    // itDialed, itClosed
	name  node.TimerName
	gen   uint64
	ev    *node.Event // itDisk
}

// post hands it to the loop, or gives up once the loop has stopped: it
// steps the core itself if the lock is free (combining), else queues it.
func (s *Shell) post(it item) bool { return s.postFrom(it, true) }

// postFrom is post; combine false always queues and kicks the loop
// goroutine (the disk worker's way: it should start its next operation, not
// step the core).
func (s *Shell) postFrom(it item, combine bool) bool {
	combine = combine && !s.cfg.NoCombining
	if combine && s.core.TryLock() {
		ok := s.runBatch(&it)
		s.release()
		return ok
	}
	select {
	case s.events <- it:
	case <-s.done:
		return false
	}
	switch {
	case s.cfg.NoCombining:
		// The loop goroutine receives from events itself.
	case !combine:
		s.kickLoop()
	case s.core.TryLock():
		// The holder we lost to may have looked at the queue for the
		// last time before our event arrived: handle it ourselves.
		s.runBatch(nil)
		s.release()
	}
	// Otherwise the lock's holder, which took it after our event was
	// queued, will look at the queue after it unlocks (release).
	return true
}

func (s *Shell) kickLoop() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// release unlocks the core and, if events were queued while it was held,
// takes it again to handle them, so that no queued event waits for an
// event that may never come.
func (s *Shell) release() {
	for {
		stopped := s.stopped
		s.core.Unlock()
		// With the loop goroutine kicked, it will take the lock and handle
		// the queue: a holder that used up its budget must not go on.
		if stopped || s.cfg.NoCombining || len(s.events) == 0 || len(s.kick) > 0 || !s.core.TryLock() {
			return
		}
		s.runBatch(nil)
	}
}

// runBatch steps the core: first the events queued before it (they may
// include earlier events of its source), then it (if not nil), then what
// else is queued, up to combineBudget, writing sockets every maxBatch events
// and at the end. It reports false if the loop has stopped. The caller holds
// core.
func (s *Shell) runBatch(it *item) (ok bool) {
	if s.stopped {
		return false
	}
	if s.ctx.Err() != nil {
		s.stop(nil)
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			s.stop(&PanicError{Value: r, Stack: debug.Stack()})
			ok = false
		}
	}()
	n := 0
	step := func(it item) bool {
		s.handle(it)
		if !s.runLocal() {
			return false
		}
		if n++; n%maxBatch == 0 {
			s.flushDirty()
		}
		return true
	}
	if it != nil && !s.cfg.NoCombining {
		for k := len(s.events); k > 0; k-- {
			if !step(<-s.events) {
				return false
			}
		}
	}
	if it != nil && !step(*it) {
		return false
	}
	for left := combineBudget; ; left-- {
		if left == 0 {
			if len(s.events) > 0 {
				s.kickLoop()
			}
			break
		}
		next, ok := s.tryRecv()
		if !ok {
			break
		}
		if !step(next) {
			return false
		}
	}
	s.flushDirty()
	return true
}

func (s *Shell) tryRecv() (item, bool) {
	select {
	case it := <-s.events:
		return it, true
	default:
		return item{}, false
	}
}

// runLocal delivers the events Step generated (resets) and checks for a
// halt; false once the loop has stopped.
func (s *Shell) runLocal() bool {
	for len(s.local) > 0 && !s.halted {
		ev := s.local[0]
		s.local[0] = node.Event{}
		s.local = s.local[1:]
		if ev.Kind == node.EvClosed {
			s.gate.Forget(ev.Conn)
		}
		s.m.Step(ev)
	}
	if s.halted {
		s.stop(&HaltError{Reason: s.haltReason})
		return false
	}
	return true
}

// stop ends the loop with err (nil: Run's context ended). Holder only.
func (s *Shell) stop(err error) {
	if !s.stopped {
		s.stopped = true
		s.stopErr = err
		close(s.stopCh)
	}
}

// spawn starts a tracked goroutine. Only the loop's holder (and Run before
// it) calls it, always before shutdown begins waiting: shutdown holds core.
func (s *Shell) spawn(fn func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		fn()
	}()
}

// loop runs on Run's goroutine: it delivers EvStart, then serves Do, takes
// over from holders that ran out of budget or were kicked by the disk
// worker, and (with NoCombining) receives every event. It is called holding
// core and returns holding it, so that no Step runs during shutdown.
func (s *Shell) loop(ctx context.Context) error {
	if ctx.Err() != nil {
		s.stop(nil)
		return nil
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				s.stop(&PanicError{Value: r, Stack: debug.Stack()})
			}
		}()
		s.m = s.factory(env{s})
		s.m.Step(node.Event{Kind: node.EvStart})
		if s.runLocal() {
			s.flushDirty()
		}
	}()
	var events chan item
	if s.cfg.NoCombining {
		events = s.events
	}
	for {
		if s.stopped {
			return s.stopErr
		}
		s.release()
		select {
		case <-ctx.Done():
			s.core.Lock()
			s.stop(nil)
		case <-s.stopCh:
			s.core.Lock()
		case it := <-events:
			s.core.Lock()
			s.runBatch(&it)
		case <-s.kick:
			s.core.Lock()
			s.runBatch(nil)
		case req := <-s.doCh:
			s.core.Lock()
			if s.stopped {
				req.done <- ErrNotRunning
				continue
			}
			req.done <- s.runDo(req.fn)
			if s.runLocal() {
				s.runBatch(nil) // and write what fn sent
			}
		}
	}
}

func (s *Shell) runDo(fn func(node.Machine)) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("shell: Do: panic: %v\n%s", r, debug.Stack())
		}
	}()
	fn(s.m)
	return nil
}

func (s *Shell) handle(it item) {
	switch it.kind {
	case itAccepted:
		s.nextConn++
		c := newConn(s, s.nextConn)
		c.nc = it.nc
		s.conns[c.id] = c
		s.startConn(c)
		s.m.Step(node.Event{Kind: node.EvAccepted, Conn: c.id, Local: it.local, Remote: it.nc.RemoteAddr().String()})
	case itDialed:
		c := it.c
		if s.conns[c.id] != c {
			// The core closed or reset the connection while dialing. As in
			// the simulator, the peer sees the connection die.
			if it.nc != nil {
				abortNetConn(it.nc)
			}
			return
		}
		if it.err != nil {
			delete(s.conns, c.id)
			s.gate.Forget(c.id)
			s.m.Step(node.Event{Kind: node.EvClosed, Conn: c.id, Err: it.err})
			return
		}
		c.nc = it.nc
		s.startConn(c)
		s.m.Step(node.Event{Kind: node.EvConnected, Conn: c.id})
	case itRecv:
		if s.conns[it.c.id] == it.c {
			s.m.Step(node.Event{Kind: node.EvReceived, Conn: it.c.id, Data: it.data})
		}
	case itClosed:
		c := it.c
		if s.conns[c.id] != c {
			return
		}
		delete(s.conns, c.id)
		// The connection is dead for the core: like the simulator, drop what
		// it still had queued rather than keep writing into a half-closed
		// socket nobody will hear about.
		c.abort(false)
		s.gate.Forget(c.id)
		s.m.Step(node.Event{Kind: node.EvClosed, Conn: c.id, Err: it.err})
	case itTimer:
		t := s.timers[it.name]
		if t == nil || t.gen != it.gen {
			return // cancelled or re-armed after this expiry was posted
		}
		delete(s.timers, it.name)
		s.m.Step(node.Event{Kind: node.EvTimer, Timer: it.name})
	case itDisk:
		// The gate must see the completion before the core does, so that an
		// acknowledgement the core sends on EvDiskDone already finds its
		// barrier passed (or the gate poisoned).
		s.gate.Completed(it.ev.Op, it.ev.OpKind, it.ev.Err)
		s.m.Step(*it.ev)
	}
}

// shutdown runs on the loop goroutine after the loop has stopped, holding
// core, so no Step runs any more.
func (s *Shell) shutdown() {
	close(s.done)
	s.dialCancel()
	for _, ln := range s.lns {
		ln.Close()
	}
	s.tmu.Lock()
	s.tstopped = true
	s.tmu.Unlock()
	for _, t := range s.timers {
		t.t.Stop()
	}
	s.smu.Lock()
	for c := range s.socks {
		c.abort(true)
	}
	s.smu.Unlock()
	// The disk worker finishes the op it is executing, then sees done.
	s.wg.Wait()
	// Nothing posts any more; release sockets still sitting in the queue.
	for {
		select {
		case it := <-s.events:
			if it.nc != nil {
				abortNetConn(it.nc)
			}
		default:
			return
		}
	}
}

func (s *Shell) acceptLoop(ln net.Listener, local string) {
	for {
		nc, err := ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.logf("accept on %s: %v", local, err)
			t := time.NewTimer(acceptBackoff)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		if !s.post(item{kind: itAccepted, nc: nc, local: local}) {
			abortNetConn(nc)
			return
		}
	}
}

// logf writes one line: wall time, node name, message.
func (s *Shell) logf(format string, args ...any) {
	if s.cfg.Log == io.Discard {
		return
	}
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	line := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z") + " " + s.cfg.Name + ": " + msg + "\n"
	s.logMu.Lock()
	io.WriteString(s.cfg.Log, line)
	s.logMu.Unlock()
}
