package procutil

import "syscall"

// ChildProcAttr starts a server in a process group of its own (so that
// KillGroup reaches everything it started) that the kernel kills if the test
// binary dies first.
func ChildProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
