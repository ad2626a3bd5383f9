package checker

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/anishathalye/porcupine"

	"herd/node/jute"
)

// ZKOp is one operation on one znode, as a client saw it: what it asked,
// when, and what came back. Writes (create, setData, delete, multi on that
// one znode) and linearizable reads (a sync followed by a getData, timed
// from the sync's start) are checked for linearizability against a model of
// a single znode; plain reads are only sequentially consistent in
// ZooKeeper and are not included.
type ZKOp struct {
	Client  int
	Key     string
	Kind    ZKKind
	Data    string
	Version int32 // the expected version (-1: any)
	Multi   []ZKSub
	Call    int64
	Return  int64 // ignored when Unknown
	// Outcome
	Unknown    bool  // the client never learnt the outcome (connection lost)
	Err        int32 // header err; for a multi, the first failing op's code (0 if none)
	FailIndex  int   // multi: the failing op (-1 if none)
	OutVersion int32 // setData/read: the Stat version returned
	OutData    string

	// until, if set, is a bound on when an unknown operation took effect,
	// for a reduced check only (see reducedZKHistories).
	until int64
}

// ZKKind is an operation kind.
type ZKKind uint8

const (
	ZKCreate ZKKind = iota + 1
	ZKSet
	ZKDelete
	ZKRead
	ZKMulti
)

// ZKSub is one op of a multi (all on the multi's key).
type ZKSub struct {
	Kind    ZKKind // ZKCreate, ZKSet, ZKDelete, or ZKCheck
	Data    string
	Version int32
}

// ZKCheck is a multi's version check.
const ZKCheck ZKKind = 100

// znodeState is the model: one znode.
type znodeState struct {
	exists  bool
	version int32
	data    string
}

// apply runs one write on the model, returning the new state and the code
// ZooKeeper answers.
func (s znodeState) apply(kind ZKKind, data string, version int32) (znodeState, int32) {
	switch kind {
	case ZKCreate:
		if s.exists {
			return s, jute.ErrNodeExists
		}
		return znodeState{exists: true, data: data}, jute.ErrOK
	case ZKSet:
		if !s.exists {
			return s, jute.ErrNoNode
		}
		if version != -1 && version != s.version {
			return s, jute.ErrBadVersion
		}
		return znodeState{exists: true, data: data, version: s.version + 1}, jute.ErrOK
	case ZKDelete:
		if !s.exists {
			return s, jute.ErrNoNode
		}
		if version != -1 && version != s.version {
			return s, jute.ErrBadVersion
		}
		return znodeState{}, jute.ErrOK
	case ZKCheck:
		if !s.exists {
			return s, jute.ErrNoNode
		}
		if version != -1 && version != s.version {
			return s, jute.ErrBadVersion
		}
		return s, jute.ErrOK
	}
	return s, jute.ErrUnimplemented
}

// applyOp runs a whole operation; failIndex is the failing multi op.
func (s znodeState) applyOp(op *ZKOp) (next znodeState, code int32, failIndex int) {
	if op.Kind != ZKMulti {
		next, code = s.apply(op.Kind, op.Data, op.Version)
		return next, code, -1
	}
	next = s
	for i, sub := range op.Multi {
		var c int32
		next, c = next.apply(sub.Kind, sub.Data, sub.Version)
		if c != jute.ErrOK {
			return s, c, i // all or nothing
		}
	}
	return next, jute.ErrOK, -1
}

var zkModel = porcupine.NondeterministicModel{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, o := range history {
			k := o.Input.(*ZKOp).Key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], o)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{znodeState{}} },
	Step: func(state, input, output interface{}) []interface{} {
		s := state.(znodeState)
		op := input.(*ZKOp)
		if op.Kind == ZKRead {
			switch {
			case op.Unknown:
				return []interface{}{s}
			case op.Err == jute.ErrNoNode && !s.exists:
				return []interface{}{s}
			case op.Err == jute.ErrOK && s.exists && s.data == op.OutData && s.version == op.OutVersion:
				return []interface{}{s}
			}
			return nil
		}
		next, code, fail := s.applyOp(op)
		if op.Unknown {
			if code == jute.ErrOK {
				return []interface{}{s, next}
			}
			return []interface{}{s}
		}
		if code != op.Err || fail != op.FailIndex {
			return nil
		}
		if code == jute.ErrOK && op.Kind == ZKSet && next.version != op.OutVersion {
			return nil
		}
		return []interface{}{next}
	},
	Equal: func(a, b interface{}) bool { return a.(znodeState) == b.(znodeState) },
	DescribeOperation: func(input, output interface{}) string {
		op := input.(*ZKOp)
		if op.Unknown {
			return fmt.Sprintf("c%d %v %s → ?", op.Client, op.Kind, op.Key)
		}
		return fmt.Sprintf("c%d %v %s %q v%d → %s v%d %q", op.Client, op.Kind, op.Key, op.Data, op.Version, jute.ErrName(op.Err), op.OutVersion, op.OutData)
	},
	DescribeState: func(state interface{}) string {
		s := state.(znodeState)
		if !s.exists {
			return "absent"
		}
		return fmt.Sprintf("v%d %q", s.version, s.data)
	},
}

// CheckZKLinearizable checks a history of znode operations. On a violation
// it writes Porcupine's visualisation to dir (if set) and names the file in
// the error.
//
// An operation whose outcome is unknown may take effect at any time after
// its call, or never. Porcupine must place every one of them, and a few
// dozen left open on one znode (a swarm run with a crash every 200 ms left
// 25 on one) make its search exponential: keeper seed 97003320's 61
// operations on one znode ran past ten minutes. So each znode is first
// checked with fewer of them (see reducedZKHistories): a linearization of a
// history without some unknown operations is one of the whole history in
// which they never took effect, so Ok there is Ok for all. Only the whole
// history can show a violation.
func CheckZKLinearizable(ops []ZKOp, dir string, timeout time.Duration) error {
	byKey := map[string][]ZKOp{}
	var keys []string
	for _, op := range ops {
		if _, ok := byKey[op.Key]; !ok {
			keys = append(keys, op.Key)
		}
		byKey[op.Key] = append(byKey[op.Key], op)
	}
	deadline := time.Now().Add(timeout)
	var undecided []ZKOp
	var undecidedKeys []string
	for _, k := range keys {
		decided := false
		for _, reduced := range reducedZKHistories(byKey[k]) {
			// Each reduced check gets a quarter of what is left: most
			// finish in microseconds, and the whole history keeps the rest.
			if porcupine.CheckOperationsTimeout(zkModel.ToModel(), zkHistory(reduced), time.Until(deadline)/4) == porcupine.Ok {
				decided = true
				break
			}
		}
		if !decided {
			undecided = append(undecided, byKey[k]...)
			undecidedKeys = append(undecidedKeys, k)
		}
	}
	if len(undecided) == 0 {
		return nil
	}
	res, info := porcupine.CheckOperationsVerbose(zkModel.ToModel(), zkHistory(undecided), max(time.Until(deadline), time.Second))
	switch res {
	case porcupine.Ok:
		return nil
	case porcupine.Unknown:
		// Name the znodes still undecided, with their operations: where a
		// violation would be, or what made the search too large.
		msg := fmt.Sprintf("linearizability check of %d operations timed out after %v; undecided:", len(ops), timeout)
		for _, k := range undecidedKeys {
			unknown := 0
			for _, op := range byKey[k] {
				if op.Unknown {
					unknown++
				}
			}
			msg += fmt.Sprintf(" %s (%d operations, %d of unknown outcome)", k, len(byKey[k]), unknown)
		}
		if k := undecidedKeys[0]; len(byKey[k]) <= 200 {
			msg += fmt.Sprintf("\n%s:\n%s", k, describeZKOps(byKey[k]))
		}
		return fmt.Errorf("%s", msg)
	}
	// Name the znode whose history fails, with its operations: that is
	// where to look.
	msg := fmt.Sprintf("history of %d znode operations is not linearizable", len(ops))
	for _, k := range undecidedKeys {
		part := zkHistory(byKey[k])
		if porcupine.CheckOperationsTimeout(zkModel.ToModel(), part, timeout) == porcupine.Illegal {
			msg += fmt.Sprintf(" (znode %s, %d operations", k, len(part))
			if n := len(part); n <= 200 {
				msg += ":\n" + describeZKOps(byKey[k])
			}
			msg += ")"
			break
		}
	}
	if dir != "" {
		path := filepath.Join(dir, fmt.Sprintf("zk-linearizability-%d.html", time.Now().UnixNano()))
		if f, err := os.Create(path); err == nil {
			if porcupine.Visualize(zkModel.ToModel(), info, f) == nil {
				msg += "; see " + path
			}
			f.Close()
		}
	}
	return fmt.Errorf("%s", msg)
}

// zkHistory turns operations into Porcupine's form; an unknown one may take
// effect any time after its call.
func zkHistory(ops []ZKOp) []porcupine.Operation {
	history := make([]porcupine.Operation, len(ops))
	for i := range ops {
		op := &ops[i]
		ret := op.Return
		if op.Unknown {
			ret = math.MaxInt64
			if op.until > 0 {
				ret = op.until
			}
		}
		history[i] = porcupine.Operation{ClientId: op.Client, Input: op, Call: op.Call, Return: ret}
	}
	return history
}

// reducedZKHistories returns one znode's history with fewer unknown
// operations, or with less time in which they may take effect, smallest
// first; each Ok answer for one is an Ok answer for the whole (see
// CheckZKLinearizable). Unknown reads constrain nothing and are never kept.
// The first keeps the unknown writes whose data some completed read returned
// (it cannot be explained without them); the second also keeps the unknown
// ones that delete (a create that succeeded may need one). The third keeps
// every unknown write but has it take effect, if at all, before its client's
// next completed write returned: a linearization within narrower intervals
// is one within the real ones. (It is also what happens: a session's writes
// apply in order, and one from a newer connection fences the old one; keeper
// seed 108003192 needed it, a delete with a version that only an unseen set
// explains.)
func reducedZKHistories(ops []ZKOp) [][]ZKOp {
	observed := map[string]bool{}
	for _, op := range ops {
		if !op.Unknown && op.Kind == ZKRead && op.Err == jute.ErrOK {
			observed[op.OutData] = true
		}
	}
	writes := func(op ZKOp) (data []string, deletes bool) {
		subs := op.Multi
		if op.Kind != ZKMulti {
			subs = []ZKSub{{Kind: op.Kind, Data: op.Data}}
		}
		for _, s := range subs {
			switch s.Kind {
			case ZKCreate, ZKSet:
				data = append(data, s.Data)
			case ZKDelete:
				deletes = true
			}
		}
		return data, deletes
	}
	// nextWrite[i]: the earliest return of a completed write by op i's
	// client called after op i (0: none).
	nextWrite := make([]int64, len(ops))
	for i, op := range ops {
		for _, w := range ops {
			if w.Client == op.Client && !w.Unknown && w.Kind != ZKRead && w.Call > op.Call &&
				(nextWrite[i] == 0 || w.Return < nextWrite[i]) {
				nextWrite[i] = w.Return
			}
		}
	}
	var seen, withDeletes, bounded []ZKOp
	deletesAdded := false
	unknown := 0
	for i, op := range ops {
		if !op.Unknown {
			seen, withDeletes, bounded = append(seen, op), append(withDeletes, op), append(bounded, op)
			continue
		}
		if op.Kind == ZKRead {
			continue
		}
		unknown++
		data, deletes := writes(op)
		if slices.ContainsFunc(data, func(d string) bool { return observed[d] }) {
			seen, withDeletes = append(seen, op), append(withDeletes, op)
		} else if deletes {
			withDeletes = append(withDeletes, op)
			deletesAdded = true
		}
		op.until = nextWrite[i]
		bounded = append(bounded, op)
	}
	if unknown == 0 {
		return nil // nothing to leave out: the whole history is as small
	}
	if !deletesAdded {
		// The second would be the first again: a failing check is not
		// worth repeating (it may have taken its whole share of time).
		return [][]ZKOp{seen, bounded}
	}
	return [][]ZKOp{seen, withDeletes, bounded}
}

func (k ZKKind) String() string {
	switch k {
	case ZKCreate:
		return "create"
	case ZKSet:
		return "set"
	case ZKDelete:
		return "delete"
	case ZKRead:
		return "sync+read"
	case ZKMulti:
		return "multi"
	case ZKCheck:
		return "check"
	}
	return "?"
}

func describeZKOps(ops []ZKOp) string {
	sorted := append([]ZKOp(nil), ops...)
	for i := 1; i < len(sorted); i++ {
		for j := i; j > 0 && sorted[j].Call < sorted[j-1].Call; j-- {
			sorted[j], sorted[j-1] = sorted[j-1], sorted[j]
		}
	}
	out := ""
	for _, op := range sorted {
		ret := "?"
		if !op.Unknown {
			ret = time.Duration(op.Return).String()
		}
		res := "unknown"
		if !op.Unknown {
			res = fmt.Sprintf("%s fail@%d v%d %q", jute.ErrName(op.Err), op.FailIndex, op.OutVersion, op.OutData)
		}
		out += fmt.Sprintf("  [%v .. %s] c%d %v %q v%d %v → %s\n", time.Duration(op.Call), ret, op.Client, op.Kind, op.Data, op.Version, op.Multi, res)
	}
	return out
}
