package raft

import (
	"testing"
	"time"
)

// An incremental snapshot's steps leave the loop to other work in the
// proportion Config.SnapshotLoopShare asks for, and never wait when the
// share is whole or the step took no time (as every event in the
// simulator).
func TestSnapshotStepGap(t *testing.T) {
	for _, c := range []struct {
		share float64
		spent time.Duration
		gap   time.Duration
	}{
		{0, 2 * time.Millisecond, 2 * time.Millisecond}, // default 0.5
		{0.5, time.Millisecond, time.Millisecond},
		{0.25, time.Millisecond, 3 * time.Millisecond},
		{1, time.Millisecond, 0},
		{2, time.Millisecond, 0},
		{0.5, 0, 0},
		{0.5, -time.Millisecond, 0}, // a clock that stepped back
	} {
		cfg := Config{SnapshotLoopShare: c.share}
		cfg.setDefaults()
		s := &storage{r: &Raft{cfg: cfg}}
		if got := s.snapshotStepGap(c.spent); got != c.gap {
			t.Errorf("share %v, step took %v: gap %v, want %v", c.share, c.spent, got, c.gap)
		}
	}
}
