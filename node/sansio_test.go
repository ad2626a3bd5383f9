package node_test

import (
	"fmt"
	"go/ast"
	"go/token"
	"go/types"
	"slices"
	"strings"
	"testing"

	"golang.org/x/tools/go/packages"
)

// The sans-I/O rule: core packages (everything under herd/node except the
// production shell) are deterministic state machines. They get time,
// randomness, network and disk only through node.Env, so the simulator can
// replay them exactly. This test enforces the rule on imports and call sites.

// forbiddenImports are packages a core must not import, with the reason.
var forbiddenImports = map[string]string{
	"os":            "files and processes are the shell's (use Env.Disk)",
	"os/exec":       "processes are the shell's",
	"os/signal":     "signals are the shell's",
	"io/ioutil":     "files are the shell's (use Env.Disk)",
	"net":           "sockets are the shell's (use Env.Dial/Send)",
	"net/http":      "sockets are the shell's",
	"syscall":       "system calls are the shell's",
	"math/rand":     "randomness must come from Env.Rand to replay",
	"math/rand/v2":  "randomness must come from Env.Rand to replay",
	"crypto/rand":   "randomness must come from Env.Rand to replay",
	"sync":          "cores are single-threaded",
	"sync/atomic":   "cores are single-threaded",
	"log":           "logging goes through Env.Logf",
	"log/slog":      "logging goes through Env.Logf",
	"unsafe":        "not needed in a core",
	"runtime":       "scheduling and the runtime are the shell's",
	"runtime/debug": "the runtime is the shell's",
}

// forbiddenTimeFuncs read or wait on the real clock; time.Duration and its
// constants stay allowed.
var forbiddenTimeFuncs = []string{"Now", "Since", "Until", "Sleep", "After", "AfterFunc", "NewTimer", "NewTicker", "Tick"}

// orderMarker must appear on (or just above) a range over a map, saying why
// the iteration order cannot reach the core's output.
const orderMarker = "order-independent"

// lintPackages loads the packages matching patterns and returns one line per
// violation.
func lintPackages(t *testing.T, patterns ...string) (violations []string) {
	violations, _ = lintPackagesSeen(t, patterns...)
	return violations
}

func lintPackagesSeen(t *testing.T, patterns ...string) ([]string, []string) {
	t.Helper()
	cfg := &packages.Config{
		Mode: packages.NeedName | packages.NeedFiles | packages.NeedSyntax | packages.NeedTypes |
			packages.NeedTypesInfo | packages.NeedImports,
		Tests: false,
	}
	pkgs, err := packages.Load(cfg, patterns...)
	if err != nil {
		t.Fatal(err)
	}
	var out, seen []string
	for _, p := range pkgs {
		for _, e := range p.Errors {
			t.Fatalf("loading %s: %v", p.PkgPath, e)
		}
		if isShell(p.PkgPath) {
			continue
		}
		seen = append(seen, p.PkgPath)
		out = append(out, lintPackage(p)...)
	}
	slices.Sort(out)
	return out, seen
}

func isShell(path string) bool {
	return strings.HasSuffix(path, "/shell") || strings.Contains(path, "/shell/")
}

func lintPackage(p *packages.Package) []string {
	var out []string
	report := func(pos token.Pos, format string, args ...any) {
		position := p.Fset.Position(pos)
		file := position.Filename[strings.LastIndex(position.Filename, "/")+1:]
		out = append(out, fmt.Sprintf("%s/%s:%d: %s", p.PkgPath, file, position.Line, fmt.Sprintf(format, args...)))
	}
	for _, f := range p.Syntax {
		for _, imp := range f.Imports {
			path := strings.Trim(imp.Path.Value, `"`)
			if why, bad := forbiddenImports[path]; bad {
				report(imp.Pos(), "imports %q: %s", path, why)
			}
		}
		comments := commentLines(p.Fset, f)
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.GoStmt:
				report(n.Pos(), "starts a goroutine: cores are single-threaded")
			case *ast.SelectStmt:
				report(n.Pos(), "select statement: cores do not wait on channels")
			case *ast.ChanType:
				report(n.Pos(), "channel type: cores do not use channels")
			case *ast.SelectorExpr:
				if fn, ok := p.TypesInfo.Uses[n.Sel].(*types.Func); ok && fn.Pkg() != nil && fn.Pkg().Path() == "time" {
					if slices.Contains(forbiddenTimeFuncs, fn.Name()) {
						report(n.Pos(), "calls time.%s: time comes from Env.Now and timers from Env.SetTimer", fn.Name())
					}
				}
			case *ast.RangeStmt:
				if tv, ok := p.TypesInfo.Types[n.X]; ok {
					if _, isMap := tv.Type.Underlying().(*types.Map); isMap {
						line := p.Fset.Position(n.Pos()).Line
						if !strings.Contains(comments[line], orderMarker) && !strings.Contains(comments[line-1], orderMarker) {
							report(n.Pos(), "ranges over a map without a %q comment saying why order cannot reach output", orderMarker)
						}
					}
				}
			}
			return true
		})
	}
	return out
}

func commentLines(fset *token.FileSet, f *ast.File) map[int]string {
	m := map[int]string{}
	for _, cg := range f.Comments {
		for _, c := range cg.List {
			m[fset.Position(c.Pos()).Line] += c.Text
		}
	}
	return m
}

// TestCoreIsSansIO: every core package obeys the rule.
func TestCoreIsSansIO(t *testing.T) {
	violations, seen := lintPackagesSeen(t, "herd/node/...")
	for _, v := range violations {
		t.Error(v)
	}
	for _, want := range []string{"herd/node", "herd/node/demo", "herd/node/frame"} {
		if !slices.Contains(seen, want) {
			t.Errorf("lint did not cover %s (covered %v)", want, seen)
		}
	}
}

// TestSansIOLintCatchesViolations proves the lint bites: a planted core
// package with one of each violation must be reported on every one.
func TestSansIOLintCatchesViolations(t *testing.T) {
	got := strings.Join(lintPackages(t, "../testdata/sansio/badcore"), "\n")
	for _, want := range []string{
		`imports "os"`, `imports "net"`, `imports "math/rand"`, `imports "crypto/rand"`, `imports "sync"`,
		"calls time.Now", "calls time.Sleep", "calls time.After",
		"starts a goroutine", "select statement", "channel type",
		"ranges over a map",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("lint missed %q; it reported:\n%s", want, got)
		}
	}
	if strings.Count(got, "ranges over a map") != 1 {
		t.Errorf("want exactly one map-range report (the annotated one is allowed); got:\n%s", got)
	}
}
