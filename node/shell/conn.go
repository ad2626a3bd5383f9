package shell

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"herd/node"
)

// conn is one connection. The loop owns its map entry and nc (set before the
// reader and writer start); the send queue is shared with the writer under mu.
type conn struct {
	s          *Shell
	id         node.ConnID
	nc         net.Conn           // nil while dialing
	cancelDial context.CancelFunc // dialed connections only
	wake       chan struct{}      // cap 1: "look at the queue again"
	readerDone chan struct{}
	// discard tells the reader the core no longer wants this connection's
	// events (it closed it, or it is dead), so it drains silently instead of
	// filling the loop's queue with events that would be dropped.
	discard atomic.Bool

	// raw lets the loop write without blocking (nil: only the writer
	// writes). dirty: the loop has it on Shell.dirty. Loop only.
	raw   syscall.RawConn
	dirty bool

	mu      sync.Mutex
	queue   [][]byte
	queued  int  // bytes in queue plus those being written
	writing bool // the loop or the writer is writing: the other keeps off
	closing bool // the core closed: flush, then FIN
	aborted bool // drop everything; the socket is (being) closed
	// sent and wrote count the bytes ever queued and ever written; a buffer
	// the core recycled after sending from it (Env.RecycleSent) waits in
	// recycles until wrote reaches what was sent before the call.
	sent, wrote int64
	recycles    []sentRecycle
}

type sentRecycle struct {
	data  []byte
	after int64 // c.sent at the RecycleSent
}

// wroteBytes counts n bytes written and puts the recycled buffers they
// free into the pool. The caller holds c.mu.
func (c *conn) wroteBytes(n int) {
	c.wrote += int64(n)
	k := 0
	for k < len(c.recycles) && c.recycles[k].after <= c.wrote {
		c.s.frames.put(c.recycles[k].data)
		c.recycles[k] = sentRecycle{}
		k++
	}
	if k > 0 {
		c.recycles = c.recycles[k:]
		if len(c.recycles) == 0 {
			c.recycles = nil
		}
	}
}

func newConn(s *Shell, id node.ConnID) *conn {
	return &conn{s: s, id: id, wake: make(chan struct{}, 1), readerDone: make(chan struct{})}
}

func (c *conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// abort stops the connection now: queued data is dropped and the socket
// closed, with RST if rst (SO_LINGER 0), which is what Reset and shutdown
// promise the peer. Safe to call more than once and from any goroutine.
func (c *conn) abort(rst bool) {
	c.discard.Store(true)
	c.mu.Lock()
	already := c.aborted
	c.aborted = true
	c.queue = nil
	c.recycles = nil // the writer may still be writing from them
	c.mu.Unlock()
	c.poke()
	if already || c.nc == nil {
		return
	}
	if rst {
		abortNetConn(c.nc)
	} else {
		c.nc.Close()
	}
}

func abortNetConn(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	nc.Close()
}

// startConn registers c for shutdown and starts its reader and writer. Loop's
// holder only.
func (s *Shell) startConn(c *conn) {
	if sc, ok := c.nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
	}
	s.smu.Lock()
	s.socks[c] = struct{}{}
	s.smu.Unlock()
	s.spawn(c.readLoop)
	s.spawn(c.writeLoop)
}

func (c *conn) readLoop() {
	defer close(c.readerDone)
	buf := make([]byte, readBufSize)
	hint := c.s.cfg.FrameHint
	have := 0 // buf[:have] is read and not yet delivered
	skip := 0 // bytes of a frame over maxDirectFrame still to pass through
	for {
		n, err := c.nc.Read(buf[have:])
		have += n
		if hint > 0 && c.discard.Load() {
			hint = 0 // nobody will look at the frames
		}
		if have > 0 && hint > 0 && err == nil {
			// Deliver the complete frames; keep a partial one back, or
			// read a long one into a buffer of its own.
			done, size := 0, 0
			for have > done {
				if skip > 0 {
					k := min(skip, have-done)
					done += k
					skip -= k
					continue
				}
				if have-done < 4 {
					break
				}
				l := int32(binary.BigEndian.Uint32(buf[done:]))
				if l < 0 || int(l) > hint {
					size = -1
					break
				}
				size = 4 + int(l)
				if size > maxDirectFrame {
					// Not worth a buffer of its own up front (a peer
					// could make the reader allocate that much with 4
					// bytes): deliver it as it comes.
					skip, size = size, 0
					continue
				}
				if have-done < size {
					break
				}
				done += size
				size = 0
			}
			switch {
			case size < 0:
				// Not framed as hinted: deliver bytes as they come.
				hint = 0
			case size > len(buf):
				if !c.deliver(buf[:done], false) {
					return
				}
				frame := c.s.frames.get(size)
				got := copy(frame, buf[done:have])
				have = 0
				m, err := io.ReadFull(c.nc, frame[got:])
				if errors.Is(err, io.ErrUnexpectedEOF) {
					err = io.EOF
				}
				if !c.deliver(frame[:got+m], true) || !c.readFailed(err) {
					return
				}
				continue
			default:
				if !c.deliver(buf[:done], false) {
					return
				}
				have = copy(buf, buf[done:have])
				continue
			}
		}
		if !c.deliver(buf[:have], false) {
			return
		}
		have = 0
		if !c.readFailed(err) {
			return
		}
	}
}

// deliver posts b as received data: b itself if it is a buffer of its own
// (own), else a copy, as the core owns Data and the read buffer is reused.
// It returns false once the loop has stopped.
func (c *conn) deliver(b []byte, own bool) bool {
	if len(b) == 0 || c.discard.Load() {
		return true
	}
	data := b // a buffer of its own keeps its spare capacity for when it is recycled
	if !own {
		data = make([]byte, len(b))
		copy(data, b)
	}
	return c.s.post(item{kind: itRecv, c: c, data: data})
}

// readFailed reports a read error (nil: none) to the loop; false if the
// reader is done.
func (c *conn) readFailed(err error) bool {
	if err == nil {
		return true
	}
	if !c.discard.Load() {
		c.s.post(item{kind: itClosed, c: c, err: readErr(err)})
	}
	return false
}

func readErr(err error) error {
	if errors.Is(err, io.EOF) {
		return node.ErrEOF
	}
	return fmt.Errorf("%w: %v", node.ErrReset, err)
}

// writeLoop writes the queue in batches (one writev per batch). It is the
// last user of the socket: it closes it once the reader is gone too, and
// then forgets the connection.
func (c *conn) writeLoop() {
	s := c.s
	defer func() {
		<-c.readerDone
		c.nc.Close()
		s.smu.Lock()
		delete(s.socks, c)
		s.smu.Unlock()
	}()
	var spare [][]byte
	for {
		c.mu.Lock()
		for (len(c.queue) == 0 && !c.closing && !c.aborted) || c.writing {
			c.mu.Unlock()
			select {
			case <-c.wake:
			case <-s.done:
				// shutdown aborts every registered socket, which ends the
				// reader; the deferred wait covers the rest.
				return
			}
			c.mu.Lock()
		}
		if c.aborted {
			c.mu.Unlock()
			return
		}
		bufs := c.queue
		c.queue = spare[:0]
		finish := c.closing && len(bufs) == 0
		c.writing = !finish
		c.mu.Unlock()

		if finish {
			c.lingerClose()
			return
		}
		n := 0
		for _, b := range bufs {
			n += len(b)
		}
		nb := net.Buffers(bufs)
		wrote, err := nb.WriteTo(c.nc)
		// WriteTo nils the buffers it consumed, so bufs can be reused without
		// pinning the core's data.
		clear(bufs)
		spare = bufs[:0]
		c.mu.Lock()
		c.queued -= n
		c.writing = false
		if err == nil {
			c.wroteBytes(int(wrote))
		}
		c.mu.Unlock()
		if err != nil {
			if !c.discard.Load() {
				s.post(item{kind: itClosed, c: c, err: fmt.Errorf("%w: %v", node.ErrReset, err)})
			}
			c.abort(false)
			return
		}
	}
}

// lingerClose sends FIN after the flushed data and lets the reader drain the
// peer's input until it closes too (or lingerTimeout), so that the kernel
// does not answer unread input with an RST that could destroy our last
// replies in flight. The deferred part of writeLoop closes the socket.
func (c *conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		c.nc.SetReadDeadline(time.Now().Add(lingerTimeout))
		return
	}
	c.nc.Close()
}

// transport is the node.Transport the SendGate releases into. Loop's holder
// only (the gate is only called from Env methods and the loop).
type transport struct{ s *Shell }

func (t transport) Send(id node.ConnID, data []byte) {
	s := t.s
	c := s.conns[id]
	if c == nil || len(data) == 0 {
		return
	}
	c.mu.Lock()
	if c.queued+len(data) > s.cfg.MaxSendQueueBytes {
		c.mu.Unlock()
		s.logf("conn %d: send queue over %d bytes, resetting", id, s.cfg.MaxSendQueueBytes)
		s.resetConn(c)
		return
	}
	c.queue = append(c.queue, data)
	c.queued += len(data)
	c.sent += int64(len(data))
	c.mu.Unlock()
	if c.raw == nil {
		c.poke()
	} else if !c.dirty {
		c.dirty = true
		s.dirty = append(s.dirty, c)
	}
}

// flushDirty writes what Send queued since the last call, by the loop's
// holder as it is about to let go: one writev per connection for all that
// the batch of events produced, without waking the connection's writer.
// What the socket does not take at once, and connections whose writer is
// busy, are left to the writer, which may block.
func (s *Shell) flushDirty() {
	for i, c := range s.dirty {
		s.dirty[i] = nil
		c.dirty = false
		c.mu.Lock()
		if c.writing || c.aborted || len(c.queue) == 0 {
			c.mu.Unlock()
			c.poke()
			continue
		}
		bufs := c.queue
		c.queue = nil
		c.writing = true
		c.mu.Unlock()
		written := s.tryWritev(c, bufs)
		rest, n := bufs, written
		for len(rest) > 0 && n >= len(rest[0]) {
			n -= len(rest[0])
			rest[0] = nil // do not pin the core's data
			rest = rest[1:]
		}
		if len(rest) > 0 {
			rest[0] = rest[0][n:]
		}
		c.mu.Lock()
		c.writing = false
		c.queued -= written
		c.wroteBytes(written)
		c.queue = append(rest, c.queue...)
		wake := len(c.queue) > 0 || c.closing || c.aborted
		c.mu.Unlock()
		if wake {
			c.poke()
		}
	}
	s.dirty = s.dirty[:0]
}

// maxIovecs is the most buffers one writev takes (Linux's IOV_MAX).
const maxIovecs = 1024

// tryWritev makes one non-blocking writev of bufs and returns how many bytes
// went out. An error, EAGAIN included, writes nothing here: the writer,
// which blocks and reports errors, takes over.
func (s *Shell) tryWritev(c *conn, bufs [][]byte) int {
	iov := s.iov[:0]
	for _, b := range bufs {
		if len(iov) == maxIovecs {
			break
		}
		if len(b) > 0 {
			v := syscall.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
	}
	s.iov = iov
	if len(iov) == 0 {
		return 0
	}
	var n uintptr
	var errno syscall.Errno
	err := c.raw.Write(func(fd uintptr) bool {
		n, _, errno = syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		return true // one attempt: the loop never waits for a socket
	})
	clear(s.iov[:len(iov)])
	if err != nil || errno != 0 {
		return 0
	}
	return int(n)
}

// RecycleSent returns data to the pool once what was sent on the
// connection so far has been written; a connection closed or reset before
// that leaves it to the collector.
func (t transport) RecycleSent(id node.ConnID, data []byte) {
	c := t.s.conns[id]
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return
	}
	if c.wrote >= c.sent {
		c.s.frames.put(data)
		return
	}
	if len(c.recycles) >= maxSentRecycles {
		return // bounded: the collector takes the rest
	}
	c.recycles = append(c.recycles, sentRecycle{data: data, after: c.sent})
}

// maxSentRecycles bounds the buffers waiting on one connection's writes.
const maxSentRecycles = 64

func (t transport) Close(id node.ConnID) {
	s := t.s
	c := s.conns[id]
	if c == nil {
		return
	}
	delete(s.conns, id)
	c.discard.Store(true)
	if c.nc == nil {
		// Still dialing. The simulator drops a dialing endpoint's queued
		// data on Close (its SYN-ACK is answered with RST), so do the same:
		// cancel the dial, and abort the socket if it completes anyway.
		c.cancelDial()
		return
	}
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.poke()
}

func (t transport) Reset(id node.ConnID) {
	if c := t.s.conns[id]; c != nil {
		t.s.resetConn(c)
	}
}

// resetConn aborts c and queues EvClosed{ErrReset} for the core. The event is
// delivered after the current Step (never from inside it), and the gate
// forgets c only then: Reset is called from inside the gate's own loops.
func (s *Shell) resetConn(c *conn) {
	delete(s.conns, c.id)
	if c.nc == nil {
		c.cancelDial()
	} else {
		c.abort(true)
	}
	s.local = append(s.local, node.Event{Kind: node.EvClosed, Conn: c.id, Err: node.ErrReset})
}

// dial runs on its own goroutine.
func (s *Shell) dial(ctx context.Context, c *conn, addr string) {
	defer c.cancelDial()
	d := net.Dialer{LocalAddr: s.dialFrom}
	if s.cfg.DialUserTimeout > 0 {
		ms := int(max(s.cfg.DialUserTimeout/time.Millisecond, 1))
		d.Control = func(network, _ string, rc syscall.RawConn) error {
			if network != "tcp" && network != "tcp4" && network != "tcp6" {
				return nil
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, tcpUserTimeout, ms)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	it := item{kind: itDialed, c: c, nc: nc}
	if err != nil {
		it.err = dialErr(err)
	}
	if !s.post(it) && nc != nil {
		abortNetConn(nc)
	}
}

// tcpUserTimeout is Linux's TCP_USER_TIMEOUT socket option (linux/tcp.h),
// which package syscall does not name.
const tcpUserTimeout = 18

// dialErr maps a dial failure onto the two outcomes the simulator knows:
// the attempt ran out of time, or it was turned away (refused, unreachable,
// unresolvable: nothing will answer on that address now).
func dialErr(err error) error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("%w: %v", node.ErrTimeout, err)
	}
	return fmt.Errorf("%w: %v", node.ErrRefused, err)
}
