package checker

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestLogLedger(t *testing.T) {
	p := func(s string) []byte { return []byte(s) }
	l := NewLogLedger()
	for _, s := range []string{"a", "b", "c", "d"} {
		l.Sent("n1", p(s))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(l.Acked("n1", 0, p("a")))
	must(l.Acked("n1", 10, p("b")))
	must(l.Acked("n1", 10, p("b"))) // the same ack twice is fine

	good := []Entry{{0, p("a")}, {5, p("c")}, {10, p("b")}}
	must(l.Check("n1", good))

	cases := []struct {
		name    string
		entries []Entry
		ack     func() error
		want    string
	}{
		{name: "lost", entries: []Entry{{0, p("a")}}, want: "is lost"},
		{name: "replaced", entries: []Entry{{0, p("a")}, {10, p("c")}}, want: "was acknowledged there"},
		{name: "phantom", entries: []Entry{{0, p("a")}, {3, p("zz")}, {10, p("b")}}, want: "no client sent"},
		{name: "disorder", entries: []Entry{{10, p("b")}, {0, p("a")}}, want: "out of order"},
		{name: "double-ack", ack: func() error { return l.Acked("n1", 0, p("d")) }, want: "acknowledged twice"},
		{name: "unsent-ack", ack: func() error { return l.Acked("n1", 20, p("nope")) }, want: "never sent"},
	}
	for _, c := range cases {
		var err error
		if c.ack != nil {
			err = c.ack()
		} else {
			err = l.Check("n1", c.entries)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
