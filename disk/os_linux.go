package disk

import (
	"os"
	"syscall"
)

// fdatasync flushes the file's data and the metadata needed to read it back
// (its size), skipping timestamps: all Sync promises.
func fdatasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			if serr = syscall.Fdatasync(int(fd)); serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

// removeOpen removes the regular file at path while holding a descriptor of
// it, and leaves the last close, which frees the file's blocks, to reap.
// removed is false, with no error, if path is not an existing regular file:
// Remove then goes the plain way, which also reports every error.
func (o *OS) removeOpen(path string) (removed bool, err error) {
	f := o.openForRemoval(path)
	if f == nil {
		return false, nil
	}
	if err := syscall.Unlink(o.abs(path)); err != nil {
		f.Close()
		return false, &os.PathError{Op: "unlink", Path: o.abs(path), Err: err}
	}
	o.reap(f)
	return true, nil
}

// openForRemoval returns an open descriptor of the regular file at path, taken
// out of the handle cache or opened for the purpose, or nil if path is not an
// existing regular file (Remove then goes the plain way, which also reports
// every error).
func (o *OS) openForRemoval(path string) *os.File {
	if e, ok := o.handles[path]; ok {
		delete(o.handles, path)
		o.lru.Remove(e)
		return e.Value.(*handle).f
	}
	f, err := os.OpenFile(o.abs(path), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil
	}
	return f
}

// startWriteback asks the kernel to start writing the file's dirty pages in
// [off, off+n) to the disk, and returns without waiting. Errors are dropped:
// it is a hint, and a later Sync reports what matters.
func startWriteback(f *os.File, off, n int64) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		syscall.SyncFileRange(int(fd), off, n, 2) // SYNC_FILE_RANGE_WRITE
	})
}
