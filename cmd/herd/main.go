// Command herd is herd's one binary: the keeper, the broker, the local dev
// cluster, the simulator and the benchmarks are its subcommands.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"sim", "run deterministic simulations (herd sim --help)", runSim},
		{"dev", "start a local 3-server keeper ensemble on 127.0.0.1:2181-2183 (Ctrl-C stops it)", runDev},
		{"keeper", "run a keeper server (ZooKeeper-compatible): herd keeper --config zoo.cfg", runKeeper},
		{"broker", "run a Kafka-compatible broker: herd broker --config server.properties", runBroker},
		{"demo-server", "run one demo-protocol server (test scaffolding)", runDemoServer},
		{"demo-client", "append records to demo servers and print each acknowledgement", runDemoClient},
		{"bench", "benchmarks: herd bench raft (consensus), keeper (any ZooKeeper endpoint), broker (any Kafka endpoint)", runBench},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: herd <command> [flags]\n\ncommands:")
	cmds := commands()
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].name < cmds[j].name })
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
}

func main() {
	reexecBenchBroker()
	os.Exit(dispatch(os.Args[1:], os.Stdout, os.Stderr))
}

func dispatch(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "herd: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func oneLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
