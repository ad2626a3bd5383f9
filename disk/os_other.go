//go:build !linux

package disk

import "os"

// fdatasync falls back to a full fsync where the platform has no fdatasync
// (on darwin, os.File.Sync issues F_FULLFSYNC, which is what durability
// needs there).
func fdatasync(f *os.File) error { return f.Sync() }
