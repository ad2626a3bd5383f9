// Package node holds the contract between herd's deterministic cores and the
// shells that run them.
//
// A core (keeper, broker, the demo protocol) is a single-threaded state
// machine: the shell hands it one Event at a time through Machine.Step, and the
// core answers only by calling methods on its Env. Nothing the core asks for
// happens during Step, and nothing ever calls back into Step from inside an Env
// method: every outcome (bytes arriving, a dial succeeding, a disk write
// finishing, a timer expiring) comes back later as another Event. This is what
// lets the same core run in the simulator (sim/, netsim/, disk.SimFS: one
// goroutine, virtual time, one seed) and in the production shell (node/shell:
// real sockets, files and clock) without a line of difference.
//
// Core packages (everything under node/ except node/shell) must not import
// os, net, syscall, math/rand, crypto/rand or sync, must not read the clock
// (time.Now and friends), must not start goroutines or use channels, and must
// not let map iteration order reach their output. sansio_test.go enforces it.
package node

import (
	"errors"
	"time"
)

// Time is a reading of a node's monotonic clock in nanoseconds. Its origin is
// arbitrary (the shell's start); only differences between readings mean
// anything. It never goes backwards, but it may jump forward (a paused process,
// a suspended VM) and it may run a little fast or slow against other nodes.
type Time int64

// Add returns t+d.
func (t Time) Add(d time.Duration) Time { return t + Time(d) }

// Sub returns the duration t-u.
func (t Time) Sub(u Time) time.Duration { return time.Duration(t - u) }

// ConnID names one endpoint of one connection, as seen by one node. IDs are
// never reused within the life of a shell, so a stale ID is harmless: sending on
// it or closing it does nothing.
type ConnID uint64

// OpID names one disk operation submitted by a node. IDs increase in submission
// order; 0 is never a valid ID and means "no operation".
type OpID uint64

// TimerName names a timer. Each node has at most one pending timer per name:
// setting a name that is pending moves it.
type TimerName string

// Machine is a core. Step handles one event; it must not block, and everything
// it wants done goes through the Env given to the Factory.
type Machine interface {
	Step(ev Event)
}

// Factory builds a fresh core for a node incarnation. A shell calls it at boot
// and again after every crash (the previous Machine and all its volatile state
// are dropped); the first event a new Machine receives is EvStart.
type Factory func(env Env) Machine

// Env is everything a core may do to the world. Methods only record intent:
// their effects happen after Step returns, and their outcomes come back as
// Events. All methods are called from inside Step only.
type Env interface {
	// Now is this node's monotonic clock.
	Now() Time
	// WallClock is this node's idea of the calendar time, in milliseconds since
	// the Unix epoch, for things ZooKeeper and Kafka expose to users (znode
	// ctime/mtime, record timestamps). It can jump in either direction. Never use
	// it to measure durations.
	WallClock() int64
	// Rand is this node's own pseudo-random stream. In the simulator it is
	// derived from the run's seed, so it replays exactly.
	Rand() *Rand
	// Logf records a debug line. The simulator stamps it with virtual time and
	// the node's name; production writes it to the log.
	Logf(format string, args ...any)

	// Dial starts an outbound connection to addr ("host:port"). The outcome is
	// EvConnected or EvClosed for the returned ID: ErrTimeout if nothing
	// answered in time, ErrRefused for any other failure to connect. Data
	// sent before EvConnected waits and departs once connected.
	Dial(addr string) ConnID
	// Send queues data on a connection. Bytes of one connection arrive in order,
	// as a byte stream: the peer may receive them split or coalesced
	// differently from the Sends. Ownership of data passes to the shell; the
	// core must not modify it afterwards.
	Send(c ConnID, data []byte)
	// SendAfter is Send held back until disk operation op (a Sync or SyncDir)
	// has completed successfully. Later sends on the same connection queue
	// behind it, so per-connection order is kept. If op fails, the held data is
	// never sent and the connection is reset: an acknowledgement must never
	// outrun the durability it promises.
	SendAfter(c ConnID, data []byte, op OpID)
	// Close closes a connection after the data already sent on it. The core
	// gets no event for its own Close. Closing a connection that is not yet
	// established abandons it, with whatever was sent on it. There is no
	// half-close: after Close nothing more is received either.
	Close(c ConnID)

	// SetTimer arms (or re-arms) the named timer to fire after d of this node's
	// monotonic time. A non-positive d fires at the next opportunity.
	SetTimer(name TimerName, d time.Duration)
	// CancelTimer disarms the named timer if it is pending.
	CancelTimer(name TimerName)

	// Disk submits a disk operation and returns its ID. Operations of one node
	// run and complete in submission order, each completion arriving as an
	// EvDiskDone. A write's effect is visible to every operation submitted after
	// it; it is durable only once a later Sync of that file has completed (and,
	// for a new, renamed or removed name, a SyncDir of its directory).
	//
	// A background op (DiskOp.Background: a sync or a syncdir only) is the
	// exception: it starts once every op submitted before it has completed,
	// but ops submitted after it do not wait for it, so its completion may
	// arrive after theirs. It acts on its path as it is when it runs (a file
	// renamed or removed meanwhile is ErrNotExist; later writes may be
	// synced too). Background ops complete in submission order among
	// themselves, and each completion arrives after those of every op
	// submitted before it.
	Disk(op DiskOp) OpID

	// Halt stops this node, as a process that exits: the shell drops the
	// Machine. Use it when continuing would be unsafe (a failed fsync, corrupt
	// state that cannot be repaired). Env calls later in the same Step are
	// ignored and disk operations not yet started are dropped; completed
	// writes stay in the page cache, as they would after exit(). A supervisor
	// (the simulator, systemd) may restart the node later.
	Halt(reason string)

	// Recycle hands back the Data of an EvReceived, or of a read's
	// EvDiskDone, that the core holds no reference into any more and never
	// will, so that the shell may read later input or reads into it instead
	// of allocating (a broker's produce requests, a megabyte each, and its
	// fetches' reads, up to tens of megabytes). It is only a hint: a core
	// that never recycles loses nothing. A buffer is recycled at most once,
	// and only whole, as delivered. The simulator overwrites it at once, so
	// a core that recycles too early reads garbage there.
	Recycle(data []byte)
	// RecycleSent is Recycle for a buffer some of whose bytes the core
	// passed to Send (or SendAfter) on c: the shell reuses it only once
	// everything sent on c before this call has been written, and never if
	// c is closed or reset first. The core calls it in the same Step as
	// those sends, right after the last of them (the simulator relies on
	// this: it copies the bytes still in flight and overwrites the buffer).
	RecycleSent(c ConnID, data []byte)
}

// EventKind says which fields of an Event are meaningful.
type EventKind uint8

const (
	// EvStart is the first event of every incarnation (boot or restart).
	EvStart EventKind = iota + 1
	// EvAccepted: an inbound connection Conn arrived on listener Local from
	// Remote. Remote is for logs only: its form differs between shells.
	EvAccepted
	// EvConnected: the Dial that returned Conn succeeded.
	EvConnected
	// EvReceived: Data arrived on Conn. The core owns Data.
	EvReceived
	// EvClosed: Conn is gone, in both directions (peer closed: ErrEOF; reset,
	// including by the shell when a send queue overflows or a SendAfter's
	// sync failed: ErrReset; a failed dial: ErrRefused or ErrTimeout;
	// retransmissions timed out: ErrTimeout). No more events follow for Conn.
	EvClosed
	// EvTimer: timer Timer fired.
	EvTimer
	// EvDiskDone: disk operation Op completed. Err is nil on success; Data
	// (read), Entries (list; stat: the one entry) and Size (stat) carry
	// results. The core owns Data. A failed write or truncate leaves its
	// range undefined (a real disk may have written part of it); a failed
	// sync must be treated as fatal (see SendGate on fsyncgate).
	EvDiskDone
)

var eventKindNames = [...]string{
	EvStart: "start", EvAccepted: "accepted", EvConnected: "connected",
	EvReceived: "received", EvClosed: "closed", EvTimer: "timer", EvDiskDone: "disk-done",
}

func (k EventKind) String() string {
	if int(k) < len(eventKindNames) && eventKindNames[k] != "" {
		return eventKindNames[k]
	}
	return "event?"
}

// Event is one input to a core. It is a plain struct rather than an interface
// so delivering it allocates nothing.
type Event struct {
	Kind  EventKind
	Conn  ConnID
	Timer TimerName
	Op    OpID
	// OpKind is the kind of the completed disk operation, for EvDiskDone.
	OpKind DiskOpKind
	// Local is the listening address for EvAccepted; Remote the peer's address.
	Local, Remote string
	Data          []byte
	Entries       []DirEntry
	Size          int64
	Err           error
}

// Errors reported in events. Shells map their platform errors onto these so
// cores can test with errors.Is and behave identically in both shells.
var (
	ErrEOF      = errors.New("connection closed by peer")
	ErrReset    = errors.New("connection reset")
	ErrRefused  = errors.New("connection refused")
	ErrTimeout  = errors.New("timed out")
	ErrNotExist = errors.New("file does not exist")
	ErrExist    = errors.New("file already exists")
	ErrIO       = errors.New("input/output error")
	ErrNoSpace  = errors.New("no space left on device")
	ErrInvalid  = errors.New("invalid disk operation")
)
