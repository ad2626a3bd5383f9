package shell

import (
	"testing"

	"herd/disk"
)

// newRealFS returns the production disk.FS over a fresh temporary directory,
// and the directory. It is closed when the test ends (after its shells have
// stopped: the shell never closes the FS it was given).
func newRealFS(t *testing.T) (disk.FS, string) {
	t.Helper()
	dir := t.TempDir()
	fs, err := disk.NewOS(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := fs.Close(); err != nil {
			t.Error(err)
		}
	})
	return fs, dir
}
