package checker

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
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

// TestZKLinearizableManyUnknown: unknown outcomes are left out of a first
// check only when that cannot hide a violation.
func TestZKLinearizableManyUnknown(t *testing.T) {
	// Keeper seed 97003320 (swarm: a crash every 206 ms): 247 operations on
	// four znodes, 95 of them with unknown outcomes; on one znode 25 stay
	// open at once, and the search over all of them ran past ten minutes.
	// Seed 108003192: 22 open on one znode, and a delete with version 1
	// that only an unknown set no read saw explains.
	for _, seed := range []string{"97003320", "108003192"} {
		b, err := os.ReadFile("testdata/zk-keeper-seed-" + seed + ".json")
		if err != nil {
			t.Fatal(err)
		}
		var h []ZKOp
		if err := json.Unmarshal(b, &h); err != nil {
			t.Fatal(err)
		}
		if err := CheckZKLinearizable(h, "", 2*time.Minute); err != nil {
			t.Fatalf("seed %s's history: %v", seed, err)
		}
	}

	// Thirty unknown sets open at once, then a read that needs one of them.
	var open []ZKOp
	open = append(open, ZKOp{Client: 1, Key: "/k", Kind: ZKCreate, Data: "a", Version: -1, Call: 0, Return: 10, FailIndex: -1})
	for i := range 30 {
		open = append(open, ZKOp{Client: 10 + i, Key: "/k", Kind: ZKSet, Data: fmt.Sprintf("u%d", i), Version: -1, Call: int64(20 + i), Unknown: true, FailIndex: -1})
	}
	open = append(open, ZKOp{Client: 2, Key: "/k", Kind: ZKRead, Call: 100, Return: 110, OutData: "u17", OutVersion: 1, FailIndex: -1})
	if err := CheckZKLinearizable(open, "", time.Minute); err != nil {
		t.Fatalf("thirty open unknown sets: %v", err)
	}
	// The same with the read seeing the second of them: version 2 needs one
	// more set whose data no read saw. The reduced checks fail; the whole
	// history (all thirty open) must still be found linearizable.
	needsUnseen := slices.Clone(open[:6])
	needsUnseen = append(needsUnseen, ZKOp{Client: 2, Key: "/k", Kind: ZKRead, Call: 100, Return: 110, OutData: "u3", OutVersion: 2, FailIndex: -1})
	if err := CheckZKLinearizable(needsUnseen, "", time.Minute); err != nil {
		t.Fatalf("a version bump by an unseen unknown set: %v", err)
	}
	// The same need with thirty open, each client writing again after: the
	// checks that leave unseen writes out fail, and the one that bounds each
	// unknown write by its client's next completed write must pass (on seed
	// 108003192's history above it is the one that decides; the whole
	// search there ran past a minute).
	bounded := slices.Clone(open[:31])
	for i := range bounded[1:] {
		c := bounded[1+i].Client
		call := int64(100 + 2*i) // one after another: concurrent ones would make a search of their own
		bounded = append(bounded, ZKOp{Client: c, Key: "/k", Kind: ZKSet, Data: fmt.Sprintf("n%d", i), Version: 1000, Call: call, Return: call + 1, Err: jute.ErrBadVersion, FailIndex: -1})
	}
	bounded = append(bounded, ZKOp{Client: 2, Key: "/k", Kind: ZKRead, Call: 200, Return: 210, OutData: "u3", OutVersion: 2, FailIndex: -1})
	if err := CheckZKLinearizable(bounded, "", time.Minute); err != nil {
		t.Fatalf("thirty open, one needed unseen: %v", err)
	}
	// A create that succeeded on an existing node needs an unknown delete.
	needsDelete := []ZKOp{
		{Client: 1, Key: "/k", Kind: ZKCreate, Data: "a", Version: -1, Call: 0, Return: 10, FailIndex: -1},
		{Client: 2, Key: "/k", Kind: ZKDelete, Version: -1, Call: 20, Unknown: true, FailIndex: -1},
		{Client: 3, Key: "/k", Kind: ZKSet, Data: "x", Version: -1, Call: 21, Unknown: true, FailIndex: -1},
		{Client: 1, Key: "/k", Kind: ZKCreate, Data: "b", Version: -1, Call: 30, Return: 40, FailIndex: -1},
	}
	if err := CheckZKLinearizable(needsDelete, "", time.Minute); err != nil {
		t.Fatalf("a create after an unknown delete: %v", err)
	}
	// Leaving unknown operations out must never hide a violation: the lost
	// acknowledged create, with open unknown writes beside it. (Proving a
	// violation means trying every order of the open ones: with thirty of
	// them that times out, which the simulator reports as a failure too.)
	lost := append(slices.Clone(open[:4]),
		ZKOp{Client: 3, Key: "/k", Kind: ZKRead, Call: 100, Return: 110, Err: jute.ErrNoNode, FailIndex: -1})
	if err := CheckZKLinearizable(lost, "", time.Minute); err == nil || !strings.Contains(err.Error(), "not linearizable") {
		t.Fatalf("lost acknowledged create beside unknown writes: %v", err)
	}
	// A search too large to finish names the znode and shows its history.
	many := slices.Clone(open[:25])
	many = append(many, ZKOp{Client: 3, Key: "/k", Kind: ZKRead, Call: 100, Return: 110, Err: jute.ErrNoNode, FailIndex: -1})
	if err := CheckZKLinearizable(many, "", 2*time.Second); err == nil || !strings.Contains(err.Error(), "timed out") ||
		!strings.Contains(err.Error(), "/k (26 operations, 24 of unknown outcome)") || !strings.Contains(err.Error(), "c3 sync+read") {
		t.Fatalf("a search too large: %v", err)
	}
	// ... and a read of data nobody wrote, on a second znode.
	phantom := append(slices.Clone(open), ZKOp{Client: 4, Key: "/j", Kind: ZKRead, Call: 5, Return: 6, OutData: "zz", FailIndex: -1})
	if err := CheckZKLinearizable(phantom, "", time.Minute); err == nil || !strings.Contains(err.Error(), "/j") {
		t.Fatalf("phantom read on /j: %v", err)
	}
}
