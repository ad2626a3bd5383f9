package keeper

import (
	"slices"
	"strings"

	"herd/node"
	"herd/node/jute"
)

// Watches live on the server that holds the client's connection; they are
// not replicated or persisted (clients re-send them after a reconnect, as
// with ZooKeeper). Each server fires them while applying the entry that
// triggers them, before it answers any later request on the watching
// connection, so a client sees the event before any reply that reveals the
// change.

type watchKind uint8

const (
	wData       watchKind = iota // one-shot: exists, getData
	wChild                       // one-shot: getChildren
	wPersistent                  // addWatch mode 0: data and children of one node, kept
	wRecursive                   // addWatch mode 1: the node and every descendant, kept
	nWatchKinds
)

type watchSet map[node.ConnID]struct{}

type watches struct {
	byPath [nWatchKinds]map[string]watchSet
	byConn map[node.ConnID]*[nWatchKinds]map[string]struct{}
	total  int
}

func newWatches() *watches {
	w := &watches{byConn: make(map[node.ConnID]*[nWatchKinds]map[string]struct{})}
	for k := range w.byPath {
		w.byPath[k] = make(map[string]watchSet)
	}
	return w
}

func (w *watches) add(k watchKind, path string, c node.ConnID) {
	set := w.byPath[k][path]
	if set == nil {
		set = make(watchSet)
		w.byPath[k][path] = set
	}
	if _, dup := set[c]; dup {
		return
	}
	set[c] = struct{}{}
	w.total++
	mine := w.byConn[c]
	if mine == nil {
		mine = new([nWatchKinds]map[string]struct{})
		w.byConn[c] = mine
	}
	if mine[k] == nil {
		mine[k] = make(map[string]struct{})
	}
	mine[k][path] = struct{}{}
}

func (w *watches) has(k watchKind, path string, c node.ConnID) bool {
	_, ok := w.byPath[k][path][c]
	return ok
}

func (w *watches) remove(k watchKind, path string, c node.ConnID) bool {
	set := w.byPath[k][path]
	if _, ok := set[c]; !ok {
		return false
	}
	delete(set, c)
	if len(set) == 0 {
		delete(w.byPath[k], path)
	}
	w.total--
	if mine := w.byConn[c]; mine != nil && mine[k] != nil {
		delete(mine[k], path)
	}
	return true
}

// dropConn forgets every watch of a closed connection.
func (w *watches) dropConn(c node.ConnID) {
	mine := w.byConn[c]
	if mine == nil {
		return
	}
	for k := range mine {
		for path := range mine[k] { // order-independent: only deletes
			if set := w.byPath[k][path]; set != nil {
				delete(set, c)
				w.total--
				if len(set) == 0 {
					delete(w.byPath[k], path)
				}
			}
		}
	}
	delete(w.byConn, c)
}

// trigger returns, in connection order, the connections to notify of ev,
// each once, and removes the one-shot watches it fires.
func (w *watches) trigger(ev event, keepOneShot bool) []node.ConnID {
	var out []node.ConnID
	take := func(k watchKind, path string, oneShot bool) {
		oneShot = oneShot && !keepOneShot
		set := w.byPath[k][path]
		for c := range set { // order-independent: sorted below, deduplicated
			out = append(out, c)
		}
		if oneShot && set != nil {
			for c := range set { // order-independent: only deletes
				if mine := w.byConn[c]; mine != nil && mine[k] != nil {
					delete(mine[k], path)
				}
			}
			w.total -= len(set)
			delete(w.byPath[k], path)
		}
	}
	switch ev.typ {
	case jute.EventNodeCreated, jute.EventNodeDataChanged:
		take(wData, ev.path, true)
		take(wPersistent, ev.path, false)
	case jute.EventNodeDeleted:
		take(wData, ev.path, true)
		take(wChild, ev.path, true)
		take(wPersistent, ev.path, false)
	case jute.EventNodeChildrenChanged:
		take(wChild, ev.path, true)
		take(wPersistent, ev.path, false)
	}
	// Recursive watches see the node's own creates, deletes and data
	// changes and those of every descendant, never NodeChildrenChanged.
	if ev.typ != jute.EventNodeChildrenChanged && len(w.byPath[wRecursive]) > 0 {
		for p := ev.path; ; {
			take(wRecursive, p, false)
			if p == "/" {
				break
			}
			if i := strings.LastIndexByte(p, '/'); i > 0 {
				p = p[:i]
			} else {
				p = "/"
			}
		}
	}
	if len(out) > 1 {
		slices.Sort(out)
		out = slices.Compact(out)
	}
	return out
}

// pathsOf returns a connection's watch paths of one kind, sorted.
func (w *watches) pathsOf(c node.ConnID, k watchKind) []string {
	mine := w.byConn[c]
	if mine == nil {
		return nil
	}
	var out []string
	for p := range mine[k] { // order-independent: sorted below
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}
