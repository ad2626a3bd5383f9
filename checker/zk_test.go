package checker

import (
	"strings"
	"testing"
	"time"

	"herd/node/jute"
)

func TestZKLinearizable(t *testing.T) {
	ok := []ZKOp{
		{Client: 1, Key: "/k", Kind: ZKCreate, Data: "a", Version: -1, Call: 0, Return: 10, FailIndex: -1},
		{Client: 1, Key: "/k", Kind: ZKSet, Data: "b", Version: 0, Call: 20, Return: 30, OutVersion: 1, FailIndex: -1},
		// Concurrent with the set: may see a or b.
		{Client: 2, Key: "/k", Kind: ZKRead, Call: 15, Return: 25, OutData: "a", OutVersion: 0, FailIndex: -1},
		// Unknown outcome: may or may not have happened.
		{Client: 2, Key: "/k", Kind: ZKSet, Data: "c", Version: -1, Call: 40, Unknown: true, FailIndex: -1},
		{Client: 1, Key: "/k", Kind: ZKRead, Call: 50, Return: 60, OutData: "b", OutVersion: 1, FailIndex: -1},
		{Client: 1, Key: "/k", Kind: ZKRead, Call: 70, Return: 80, OutData: "c", OutVersion: 2, FailIndex: -1},
		// A failed multi changes nothing.
		{Client: 2, Key: "/k", Kind: ZKMulti, Multi: []ZKSub{{Kind: ZKCheck, Version: 2}, {Kind: ZKSet, Data: "d", Version: -1}, {Kind: ZKCreate, Data: "x"}},
			Call: 90, Return: 100, Err: jute.ErrNodeExists, FailIndex: 2},
		{Client: 1, Key: "/k", Kind: ZKRead, Call: 110, Return: 120, OutData: "c", OutVersion: 2, FailIndex: -1},
	}
	if err := CheckZKLinearizable(ok, "", 10*time.Second); err != nil {
		t.Fatalf("linearizable history rejected: %v", err)
	}

	stale := append([]ZKOp(nil), ok[:2]...)
	// After the set to b completed (at 30), a read that starts later sees a.
	stale = append(stale, ZKOp{Client: 2, Key: "/k", Kind: ZKRead, Call: 40, Return: 50, OutData: "a", OutVersion: 0, FailIndex: -1})
	if err := CheckZKLinearizable(stale, t.TempDir(), 10*time.Second); err == nil || !strings.Contains(err.Error(), "not linearizable") {
		t.Fatalf("stale read accepted: %v", err)
	}

	lost := []ZKOp{
		{Client: 1, Key: "/k", Kind: ZKCreate, Data: "a", Version: -1, Call: 0, Return: 10, FailIndex: -1},
		// An acknowledged create, then a read that finds nothing.
		{Client: 2, Key: "/k", Kind: ZKRead, Call: 20, Return: 30, Err: jute.ErrNoNode, FailIndex: -1},
	}
	if err := CheckZKLinearizable(lost, "", 10*time.Second); err == nil {
		t.Fatal("lost acknowledged write accepted")
	}
}
