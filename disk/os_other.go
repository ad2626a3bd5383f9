//go:build !linux

package disk

import "os"

// fdatasync falls back to a full fsync where the platform has no fdatasync
// (on darwin, os.File.Sync issues F_FULLFSYNC, which is what durability
// needs there).
func fdatasync(f *os.File) error { return f.Sync() }

// removeOpen is removal through an open descriptor (os_linux.go); not here,
// where some systems cannot remove an open file.
func (o *OS) removeOpen(string) (bool, error) { return false, nil }

// startWriteback is a hint to start writing back part of a file
// (os_linux.go); nothing here.
func startWriteback(*os.File, int64, int64) {}
