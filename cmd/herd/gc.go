package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// tuneGC tunes the garbage collector for a keeper or broker process unless
// the user chose (GOGC or GOMEMLIMIT). Go's default collects whenever the
// heap has doubled: for a small heap that collects too often (on a busy
// ensemble the mark phase was a third of the CPU; a broker, whose heap is
// small and which allocates a buffer for every produce request, spent half
// its user time collecting), and for a large one it lets resident memory
// reach twice the tree. Instead the heap may grow by gcHeadroom(live) over
// what the last collection found live: a fixed 128 MiB while small, so
// rarely collected, down to a quarter of the tree when large. The limit is
// recomputed after every collection, so it follows the heap up (a restart
// loading a snapshot) and down (no faster than the runtime gives memory
// back: gcMemoryLimit).
func tuneGC() {
	if os.Getenv("GOGC") != "" || os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	tuneGCOnce.Do(func() {
		debug.SetGCPercent(-1)
		setGCMemoryLimit()
		afterEachGC(setGCMemoryLimit)
	})
}

var tuneGCOnce sync.Once

const gcMinHeadroom = 128 << 20

// gcHeadroom is how far the heap may grow over live bytes before the next
// collection: gcMinHeadroom up to a live heap of that size, then falling
// to half of it at twice that size, and a quarter of the live heap beyond.
// A collection's work grows with the live heap and its frequency with
// allocation over headroom, so the fixed headroom costs a large tree more
// CPU per write; but it is resident memory too, and most of what a server
// holds right after a burst of writes. With a million znodes (about 280 MB
// live) the headroom of max(128 MiB, live/2) held servers at 400-415 MiB
// after a populate; this one at 340-370 MiB, the collector's share of CPU
// going from 2% to 3-4% and the populate's throughput within the noise
// (DESIGN section 11, "Keeper memory"). Total (live + headroom) never
// falls as live grows.
func gcHeadroom(live int64) int64 {
	return max(live/4, min(gcMinHeadroom, 3*gcMinHeadroom/2-live/2))
}

func setGCMemoryLimit() {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"}, {Name: "/memory/classes/heap/free:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(sample)
	v := func(i int) int64 { return int64(sample[i].Value.Uint64()) }
	debug.SetMemoryLimit(gcMemoryLimit(v(0), v(1), v(2)+v(3)+v(4)+v(5), v(5)))
}

// gcMemoryLimit is the memory limit after a collection that found live
// bytes live, with total bytes mapped by the runtime, heap of them the
// heap's (objects, unused, free and released) and released of them given
// back to the OS.
//
// The limit counts all the runtime's memory, not only the heap: add what
// is outside the heap (stacks, GC metadata, ...). Free and unused heap
// memory must not count as overhead: right after a collection it is all
// the garbage just freed, and counting it let the heap grow to twice the
// tree again.
//
// Nor may the limit fall below the memory the process holds now (total
// less released): when the live heap shrinks (a burst of deletes), a
// limit below it makes every allocation return memory to the OS first
// (the runtime's eager scavenging, in the allocating goroutine) and fault
// it back in soon after. On this virtual machine that stalled a server's
// loop for 100-250 ms after a collection that found the tree much
// smaller. Above the limit's 95% the runtime's background scavenger
// returns memory at its own slow pace, and the next collection's limit
// follows it down.
func gcMemoryLimit(live, total, heap, released int64) int64 {
	overhead := max(total-heap, 0)
	return max(live+overhead+gcHeadroom(live), total-released)
}

// afterEachGC calls fn after every garbage collection, from the runtime's
// finalizer goroutine: a sentinel object becomes unreachable at each cycle
// and its finalizer arms the next one.
func afterEachGC(fn func()) {
	s := new(gcSentinel)
	runtime.SetFinalizer(s, func(*gcSentinel) {
		fn()
		afterEachGC(fn)
	})
}

// gcSentinel holds a pointer so it is never a tiny allocation (finalizers on
// those may never run).
type gcSentinel struct {
	_ *byte
	_ [8]byte
}

// heapTrim returns memory the heap no longer uses to the operating system
// once the process has been quiet for a while: after a burst of writes the
// heap holds up to its headroom (tuneGC) of garbage-collected memory, and
// a restart's snapshot image is a transient buffer the size of the tree;
// without this the process would keep holding that much resident memory
// until the next collection, which with an idle ensemble may be never. One
// trimmer runs per process while any keeper or broker does.
var heapTrim struct {
	mu    sync.Mutex
	users int
	stop  chan struct{}
	done  chan struct{}
	now   chan struct{} // trimAfterRecovery: trim at once (buffered, 1)
}

// trimAfterRecovery asks the trimmer to return free memory to the OS now,
// without waiting for a quiet minute: a server that has just recovered
// holds what its restore allocated and no longer uses (snapshot pieces,
// replayed WAL segments, the headroom its collector let grow over them),
// and under load it may not be quiet for a long while. One collection
// over the restored tree, in the trimmer's goroutine. On a million znodes
// a restarted follower held 364 MiB when it began to serve, 269 once the
// quiet minute had passed (2026-12-06, stop 37).
func trimAfterRecovery() {
	heapTrim.mu.Lock()
	defer heapTrim.mu.Unlock()
	if heapTrim.now == nil {
		return // no trimmer running
	}
	select {
	case heapTrim.now <- struct{}{}:
	default: // one is already asked for
	}
}

const (
	heapTrimEvery = 5 * time.Second // how often the trimmer looks
	// heapTrimQuiet is how long no collection must have run before the
	// trim. Memory returned to the OS is faulted in and zeroed again when
	// load resumes: trimming after 3 s of quiet made every burst that
	// followed a pause of seconds (the rounds of a benchmark) fault its
	// whole headroom back in, half the servers' page faults; on this
	// virtual machine a fault costs tens of microseconds, and creates
	// after such a pause ran 29k/s against 34k/s without the trim.
	heapTrimQuiet = time.Minute
)

func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func startHeapTrim() (stop func()) {
	heapTrim.mu.Lock()
	defer heapTrim.mu.Unlock()
	heapTrim.users++
	if heapTrim.users == 1 {
		st, done, now := make(chan struct{}), make(chan struct{}), make(chan struct{}, 1)
		heapTrim.stop, heapTrim.done, heapTrim.now = st, done, now
		go func() {
			defer close(done)
			t := time.NewTicker(heapTrimEvery)
			defer t.Stop()
			lastCycles, quietSince, trimmed := gcCycles(), time.Now(), false
			for {
				select {
				case <-st:
					return
				case <-now:
					// Not counted as the quiet spell's trim: what the
					// server did after recovering (the rest of the log
					// applied, its leader caught up with) is trimmed
					// too once it has been quiet for a while.
					debug.FreeOSMemory()
					lastCycles, quietSince, trimmed = gcCycles(), time.Now(), false
				case now := <-t.C:
					// Only a quiet process is trimmed, once per quiet
					// spell: under load the garbage is collected and its
					// memory reused within moments, and returning it to the
					// OS each time cost a busy leader a tenth of its CPU (a
					// forced collection, then page faults and zeroing as the
					// heap regrew). The trim collects first: what is dead
					// is only known after a collection (a restart's
					// snapshot buffer died after the last one).
					if c := gcCycles(); c != lastCycles {
						lastCycles, quietSince, trimmed = c, now, false
					} else if !trimmed && now.Sub(quietSince) >= heapTrimQuiet {
						debug.FreeOSMemory()
						lastCycles, trimmed = gcCycles(), true
					}
				}
			}
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			heapTrim.mu.Lock()
			defer heapTrim.mu.Unlock()
			heapTrim.users--
			if heapTrim.users == 0 {
				close(heapTrim.stop)
				<-heapTrim.done
				heapTrim.now = nil
			}
		})
	}
}
