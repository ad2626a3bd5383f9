package shell

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"herd/node"
)

// memFS is an in-memory disk.FS for tests. It remembers what was durable at
// the last Sync of each file, can fail Sync on demand, and lets a test hook
// every operation (to block it, or to observe it).
type memFS struct {
	failSync  atomic.Bool
	syncDelay time.Duration
	// hook, if set, runs before each operation, outside the lock.
	hook func(op, path string)

	mu    sync.Mutex
	files map[string]*memFile
	dirs  map[string]bool
	ops   []string
}

type memFile struct {
	data, durable []byte
	// dirtyFrom is the lowest offset changed since the last Sync, so Sync
	// copies only the changed tail (the ack-log test syncs a growing file
	// thousands of times).
	dirtyFrom int64
}

func (f *memFile) dirty(off int64) { f.dirtyFrom = min(f.dirtyFrom, off) }

func newMemFS() *memFS {
	return &memFS{files: map[string]*memFile{}, dirs: map[string]bool{"": true}}
}

func (m *memFS) enter(op, path string) {
	if m.hook != nil {
		m.hook(op, path)
	}
	m.mu.Lock()
	m.ops = append(m.ops, op+" "+path)
}

// Ops returns the operations executed so far, as "kind path".
func (m *memFS) Ops() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.ops...)
}

// Data returns a copy of the file's current contents (page cache).
func (m *memFS) Data(path string) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f := m.files[path]; f != nil {
		return append([]byte(nil), f.data...)
	}
	return nil
}

// DurableRange returns the durable bytes [off, off+n) of path, or fewer.
func (m *memFS) DurableRange(path string, off int64, n int) []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.files[path]
	if f == nil || off >= int64(len(f.durable)) {
		return nil
	}
	end := min(off+int64(n), int64(len(f.durable)))
	return append([]byte(nil), f.durable[off:end]...)
}

func (m *memFS) parentOK(path string) error {
	if !m.dirs[node.Dir(path)] {
		return fmt.Errorf("%w: parent of %q", node.ErrNotExist, path)
	}
	return nil
}

func (m *memFS) ReadAt(path string, off int64, n int) ([]byte, error) {
	m.enter("read", path)
	defer m.mu.Unlock()
	f := m.files[path]
	if f == nil {
		return nil, fmt.Errorf("%w: %q", node.ErrNotExist, path)
	}
	if off >= int64(len(f.data)) {
		return []byte{}, nil
	}
	end := min(off+int64(n), int64(len(f.data)))
	return append([]byte(nil), f.data[off:end]...), nil
}

func (m *memFS) WriteAt(path string, off int64, p []byte) error {
	m.enter("write", path)
	defer m.mu.Unlock()
	if err := m.parentOK(path); err != nil {
		return err
	}
	f := m.files[path]
	if f == nil {
		f = &memFile{}
		m.files[path] = f
	}
	f.dirty(off)
	if end := off + int64(len(p)); end > int64(len(f.data)) {
		f.data = append(f.data, make([]byte, end-int64(len(f.data)))...)
	}
	copy(f.data[off:], p)
	return nil
}

func (m *memFS) Truncate(path string, size int64) error {
	m.enter("truncate", path)
	defer m.mu.Unlock()
	f := m.files[path]
	if f == nil {
		return fmt.Errorf("%w: %q", node.ErrNotExist, path)
	}
	f.dirty(size)
	if size <= int64(len(f.data)) {
		f.data = f.data[:size]
	} else {
		f.data = append(f.data, make([]byte, size-int64(len(f.data)))...)
	}
	return nil
}

func (m *memFS) Sync(path string) error {
	if m.syncDelay > 0 {
		time.Sleep(m.syncDelay)
	}
	m.enter("sync", path)
	defer m.mu.Unlock()
	f := m.files[path]
	if f == nil {
		return fmt.Errorf("%w: %q", node.ErrNotExist, path)
	}
	if m.failSync.Load() {
		return fmt.Errorf("%w: fsync %q (injected)", node.ErrIO, path)
	}
	from := min(f.dirtyFrom, int64(len(f.durable)), int64(len(f.data)))
	f.durable = append(f.durable[:from], f.data[from:]...)
	f.dirtyFrom = int64(len(f.data))
	return nil
}

func (m *memFS) SyncDir(dir string) error {
	m.enter("syncdir", dir)
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return fmt.Errorf("%w: %q", node.ErrNotExist, dir)
	}
	return nil
}

func (m *memFS) Mkdir(path string) error {
	m.enter("mkdir", path)
	defer m.mu.Unlock()
	if m.dirs[path] || m.files[path] != nil {
		return fmt.Errorf("%w: %q", node.ErrExist, path)
	}
	if err := m.parentOK(path); err != nil {
		return err
	}
	m.dirs[path] = true
	return nil
}

func (m *memFS) Rename(from, to string) error {
	m.enter("rename", from)
	defer m.mu.Unlock()
	f := m.files[from]
	if f == nil {
		return fmt.Errorf("%w: %q", node.ErrNotExist, from)
	}
	delete(m.files, from)
	m.files[to] = f
	return nil
}

func (m *memFS) Remove(path string) error {
	m.enter("remove", path)
	defer m.mu.Unlock()
	if m.files[path] != nil {
		delete(m.files, path)
		return nil
	}
	if m.dirs[path] && path != "" {
		for name := range m.files {
			if strings.HasPrefix(name, path+"/") {
				return fmt.Errorf("%w: %q not empty", node.ErrInvalid, path)
			}
		}
		delete(m.dirs, path)
		return nil
	}
	return fmt.Errorf("%w: %q", node.ErrNotExist, path)
}

func (m *memFS) List(dir string) ([]node.DirEntry, error) {
	m.enter("list", dir)
	defer m.mu.Unlock()
	if !m.dirs[dir] {
		return nil, fmt.Errorf("%w: %q", node.ErrNotExist, dir)
	}
	var out []node.DirEntry
	for name, f := range m.files {
		if node.Dir(name) == dir {
			out = append(out, node.DirEntry{Name: node.Base(name), Size: int64(len(f.data))})
		}
	}
	for name := range m.dirs {
		if name != "" && node.Dir(name) == dir {
			out = append(out, node.DirEntry{Name: node.Base(name), IsDir: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (m *memFS) Stat(path string) (node.DirEntry, error) {
	m.enter("stat", path)
	defer m.mu.Unlock()
	if f := m.files[path]; f != nil {
		return node.DirEntry{Name: node.Base(path), Size: int64(len(f.data))}, nil
	}
	if m.dirs[path] {
		return node.DirEntry{Name: node.Base(path), IsDir: true}, nil
	}
	return node.DirEntry{}, fmt.Errorf("%w: %q", node.ErrNotExist, path)
}

// readRealFile reads a file of a real data directory.
func readRealFile(dir, path string) ([]byte, error) {
	return os.ReadFile(filepath.Join(dir, filepath.FromSlash(path)))
}
