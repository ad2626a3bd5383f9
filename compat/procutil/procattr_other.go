//go:build !linux

package procutil

import "syscall"

// ChildProcAttr starts a server in a process group of its own. Only Linux
// has a parent-death signal: elsewhere a server outlives a test binary that
// dies without cleaning up.
func ChildProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
