package jepsen

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-zookeeper/zk"

	"herd/compat/ensemble"
)

// TestKeeperDiskFull gives one of three `herd keeper` processes a data
// directory on a 6 MiB tmpfs (in a mount namespace of the test's own) and
// fills it with 4 KiB znodes, under the keeper workload. The server must
// stop with a clear message once a write or a snapshot finds no space, as
// ZooKeeper does, while the other two go on serving; given room again and
// restarted, it must recover its log (whose last write the full disk may
// have cut short) and catch up; at the end every server holds every znode
// the filler was told it created, and the history is linearizable.
func TestKeeperDiskFull(t *testing.T) {
	if !inNamespaces(t) {
		return
	}
	dir := t.TempDir()
	small := filepath.Join(dir, "server-3")
	if err := os.MkdirAll(small, 0o755); err != nil {
		t.Fatal(err)
	}
	resize := mountTmpfs(t, small, "6m")
	e, err := ensemble.Start(ensemble.Herd, ensemble.Options{HerdBin: herdBin, Dir: dir, Host: serverHost,
		Extra: map[string]string{"tickTime": "500", "snapCount": "2000"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Stop() })
	w := startKeeperWorkload(t, e, 20*time.Second)

	// The filler writes through the two servers with room, until told.
	var mu sync.Mutex // created
	var created []string
	var fillErr error
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		c, _, err := zk.Connect(e.Addrs[:2], 10*time.Second, zk.WithLogger(log.New(io.Discard, "", 0)))
		if err != nil {
			fillErr = err
			return
		}
		defer c.Close()
		if _, err := c.Create("/fill", nil, 0, zk.WorldACL(zk.PermAll)); err != nil && !errors.Is(err, zk.ErrNodeExists) {
			fillErr = err
			return
		}
		data := make([]byte, 4096)
		for {
			select {
			case <-stop:
				return
			default:
			}
			p, err := c.Create("/fill/n", data, zk.FlagSequence, zk.WorldACL(zk.PermAll))
			switch {
			case err == nil:
				mu.Lock()
				created = append(created, p)
				mu.Unlock()
			case errors.Is(err, zk.ErrConnectionClosed), errors.Is(err, zk.ErrNoServer), errors.Is(err, zk.ErrSessionMoved):
				time.Sleep(50 * time.Millisecond) // a leader change: the outcome is unknown, try again
			default:
				fillErr = err
				return
			}
		}
	})

	// s3 must stop, and say why.
	deadline := time.Now().Add(30 * time.Second)
	for e.PIDs()[2] != 0 {
		if time.Now().After(deadline) {
			close(stop)
			wg.Wait()
			t.Fatalf("s3 still runs 30 s into the fill with its disk full:\n%s", e.LogTail(2))
		}
		time.Sleep(100 * time.Millisecond)
	}
	why := diskFullLine(e.LogTail(2))
	if why == "" {
		t.Fatalf("s3 stopped without saying its disk is full:\n%s", e.LogTail(2))
	}
	mu.Lock()
	stopped := len(created)
	mu.Unlock()
	// The other two go on.
	for i := range 2 {
		if err := serves(e.Addrs[i], fmt.Sprintf("/while-full-%d", i+1), time.Now().Add(20*time.Second)); err != nil {
			t.Fatalf("s%d did not serve while s3 was down: %v", i+1, err)
		}
	}
	time.Sleep(2 * time.Second) // more for s3 to catch up on
	resize("256m")
	if err := e.Restart(2); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if fillErr != nil {
		t.Fatalf("filler: %v", fillErr)
	}
	w.finish(100, 50)

	// Every server holds every znode the filler was told it created.
	for i, addr := range e.Addrs {
		c, _, err := zk.Connect([]string{addr}, 10*time.Second, zk.WithLogger(log.New(io.Discard, "", 0)))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Sync("/fill"); err != nil {
			t.Fatalf("s%d: sync: %v", i+1, err)
		}
		kids, _, err := c.Children("/fill")
		c.Close()
		if err != nil {
			t.Fatalf("s%d: children: %v", i+1, err)
		}
		have := make(map[string]bool, len(kids))
		for _, k := range kids {
			have["/fill/"+k] = true
		}
		for _, p := range created {
			if !have[p] {
				t.Fatalf("s%d lost %s (of %d created; %d children)", i+1, p, len(created), len(kids))
			}
		}
	}
	t.Logf("s3 stopped after %d znodes of 4 KiB: %s", stopped, why)
	t.Logf("%d znodes created in all, on every server after s3's restart", len(created))
}
