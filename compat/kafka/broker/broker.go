// Package broker starts one local Kafka-compatible broker on loopback for
// the Kafka compatibility suite (herd/compat/kafka) and for benchmarks:
// either herd's broker (`herd broker --config server.properties`) or
// franz-go's in-memory fake Kafka, kfake, run by the small helper binary in
// ./kfakebroker, from the very same server.properties.
//
// The broker gets its own directory under Options.Dir:
//
//	server.properties   broker.id, listeners, log.dirs, num.partitions, ...
//	logs/               log.dirs
//	server.log          stdout+stderr of the process (unless Options.Log is set)
//
// The process runs in its own process group with a parent-death signal, so
// it never outlives the test binary. Start returns once the broker answers
// ApiVersions and Metadata on its listener and lists itself in Metadata.
package broker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"herd/compat/procutil"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Kind selects the broker implementation.
type Kind string

const (
	Herd  Kind = "herd"
	KFake Kind = "kfake"
)

// Options configures Start.
type Options struct {
	// Bin is the binary to run: the herd binary (Kind herd) or the
	// kfakebroker helper (Kind kfake; see BuildKFake).
	Bin string
	// Dir holds the config, the logs and server.log (default: a fresh
	// temporary directory, removed by Stop).
	Dir string
	// BrokerID is broker.id (default 1).
	BrokerID int
	// Partitions is num.partitions, the partition count of auto-created
	// topics and of CreateTopics with -1 partitions (default 3).
	Partitions int
	// AutoCreate sets auto.create.topics.enable (default false: tests
	// create their topics, so a typo cannot create one by accident).
	AutoCreate bool
	// Extra are further server.properties keys; they override the above.
	Extra map[string]string
	// Log receives the process's output, lines prefixed "[broker] "
	// (nil: Dir/server.log).
	Log io.Writer
	// StartTimeout bounds Start (default 30s).
	StartTimeout time.Duration
}

// Broker is a running broker.
type Broker struct {
	Addr   string // 127.0.0.1:port of the PLAINTEXT listener
	Port   int
	Dir    string
	Config string // path of server.properties
	// NodeID is the node id the broker reports for itself in Metadata.
	// herd must report broker.id; kfake numbers its nodes from 0 and
	// ignores broker.id.
	NodeID int32
	// APIVersions maps each API key the broker advertised in its
	// ApiVersions v0 reply to its [min, max] versions.
	APIVersions map[int16][2]int16

	kind   Kind
	opts   Options
	ownDir bool

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	logFile *os.File
	tail    *procutil.TailBuffer
	stopped bool
}

// BuildKFake builds the kfakebroker helper into dir and returns its path.
func BuildKFake(dir string) (string, error) {
	bin := filepath.Join(dir, "kfakebroker")
	cmd := exec.Command("go", "build", "-o", bin, "herd/compat/kafka/broker/kfakebroker")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building kfakebroker: %v\n%s", err, out)
	}
	return bin, nil
}

// Start writes server.properties, starts the broker and waits until it
// serves ApiVersions and Metadata.
func Start(kind Kind, opts Options) (*Broker, error) {
	if kind != Herd && kind != KFake {
		return nil, fmt.Errorf("broker: unknown kind %q", kind)
	}
	if opts.Bin == "" {
		return nil, errors.New("broker: Options.Bin is required")
	}
	if opts.BrokerID == 0 {
		opts.BrokerID = 1
	}
	if opts.Partitions == 0 {
		opts.Partitions = 3
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 30 * time.Second
	}
	deadline := time.Now().Add(opts.StartTimeout)
	var lastErr error
	// A freshly picked port can be taken by someone else before the
	// broker binds it; then retry with another one.
	for attempt := 0; attempt < 3; attempt++ {
		b, err := start(kind, opts, deadline)
		if err == nil {
			return b, nil
		}
		lastErr = err
		if !strings.Contains(strings.ToLower(err.Error()), "address already in use") || time.Now().After(deadline) {
			break
		}
	}
	return nil, lastErr
}

func start(kind Kind, opts Options, deadline time.Time) (*Broker, error) {
	b := &Broker{kind: kind, opts: opts, Dir: opts.Dir, tail: &procutil.TailBuffer{Max: 64 << 10}}
	if b.Dir == "" {
		d, err := os.MkdirTemp("", "herd-kafka-broker-")
		if err != nil {
			return nil, err
		}
		b.Dir, b.ownDir = d, true
	}
	ports, err := procutil.FreePorts(1)
	if err != nil {
		b.Stop()
		return nil, err
	}
	port := ports[0]
	b.Port = port
	b.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	b.Config = filepath.Join(b.Dir, "server.properties")
	logs := filepath.Join(b.Dir, "logs")
	// A retry must not find the data of the failed attempt.
	if err := os.RemoveAll(logs); err != nil {
		b.Stop()
		return nil, err
	}
	if err := os.MkdirAll(logs, 0o755); err != nil {
		b.Stop()
		return nil, err
	}
	if err := os.WriteFile(b.Config, []byte(b.properties(logs)), 0o644); err != nil {
		b.Stop()
		return nil, err
	}
	if err := b.launch(); err != nil {
		b.Stop()
		return nil, err
	}
	if err := b.waitReady(deadline); err != nil {
		err = fmt.Errorf("broker: %s at %s not ready: %w\n--- tail of its output ---\n%s", kind, b.Addr, err, procutil.LastLines(b.tail.String(), 40))
		b.Stop()
		return nil, err
	}
	return b, nil
}

// properties renders server.properties: the standard keys of a single
// ZooKeeper-era Kafka broker, then Options.Extra.
func (b *Broker) properties(logs string) string {
	cfg := []procutil.KV{
		{"broker.id", strconv.Itoa(b.opts.BrokerID)},
		{"listeners", "PLAINTEXT://" + b.Addr},
		{"advertised.listeners", "PLAINTEXT://" + b.Addr},
		{"log.dirs", logs},
		{"num.partitions", strconv.Itoa(b.opts.Partitions)},
		{"default.replication.factor", "1"},
		{"offsets.topic.replication.factor", "1"},
		{"transaction.state.log.replication.factor", "1"},
		{"transaction.state.log.min.isr", "1"},
		{"auto.create.topics.enable", strconv.FormatBool(b.opts.AutoCreate)},
		{"delete.topic.enable", "true"},
		{"group.initial.rebalance.delay.ms", "0"},
	}
	return fmt.Sprintf("# written by herd/compat/kafka/broker for a %s broker\n", b.kind) + procutil.Properties(cfg, b.opts.Extra)
}

// Kind reports which implementation runs.
func (b *Broker) Kind() Kind { return b.kind }

func (b *Broker) launch() error {
	var cmd *exec.Cmd
	switch b.kind {
	case Herd:
		cmd = exec.Command(b.opts.Bin, "broker", "--config", b.Config)
	default:
		cmd = exec.Command(b.opts.Bin, "--config", b.Config)
	}
	cmd.Dir = b.Dir
	cmd.SysProcAttr = procutil.ChildProcAttr()
	var out io.Writer
	if b.opts.Log != nil {
		out = &procutil.PrefixWriter{W: b.opts.Log, Prefix: "[broker] "}
	} else {
		f, err := os.OpenFile(filepath.Join(b.Dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		b.logFile = f
		out = procutil.BestEffort{W: f} // the tail must get the output on a full disk too
	}
	w := io.MultiWriter(out, b.tail)
	fmt.Fprintf(w, "=== broker: starting %s\n", strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		if b.logFile != nil {
			b.logFile.Close()
		}
		return fmt.Errorf("broker: starting %s: %w", b.opts.Bin, err)
	}
	done := make(chan struct{})
	b.mu.Lock()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	lf, tail := b.logFile, b.tail
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(tail, "=== broker: exited: %v\n", err)
		if lf != nil {
			lf.Close()
		}
		close(done)
	}()
	return nil
}

// Restart kills the broker and starts it again on the same port with the
// same config and log.dirs, and waits until it is ready.
func (b *Broker) Restart() error {
	if err := b.kill(); err != nil {
		return err
	}
	if err := b.launch(); err != nil {
		return err
	}
	if err := b.waitReady(time.Now().Add(b.opts.StartTimeout)); err != nil {
		return fmt.Errorf("broker: restarted %s at %s not ready: %w\n%s", b.kind, b.Addr, err, procutil.LastLines(b.tail.String(), 40))
	}
	return nil
}

// Exited reports whether the process has exited (it should not, until
// Stop).
func (b *Broker) Exited() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return procutil.IsClosed(b.done)
}

// PID returns the process id, 0 if it is not running.
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cmd == nil || procutil.IsClosed(b.done) {
		return 0
	}
	return b.cmd.Process.Pid
}

// LogTail returns the last lines of the broker's output.
func (b *Broker) LogTail(n int) string { return procutil.LastLines(b.tail.String(), n) }

// Stop kills the broker's process group and removes the directory if
// Start created it.
func (b *Broker) Stop() error {
	b.mu.Lock()
	if b.stopped {
		b.mu.Unlock()
		return nil
	}
	b.stopped = true
	b.mu.Unlock()
	err := b.kill()
	if b.ownDir {
		if e := os.RemoveAll(b.Dir); e != nil && err == nil {
			err = e
		}
	}
	return err
}

func (b *Broker) kill() error {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd, b.logFile = nil, nil
	b.mu.Unlock()
	if cmd == nil {
		return nil
	}
	if err := procutil.KillGroup(cmd, done, 30*time.Second); err != nil {
		return fmt.Errorf("broker: %v", err)
	}
	return nil
}

// waitReady probes until the broker answers, its process exits or the
// deadline passes.
func (b *Broker) waitReady(deadline time.Time) error {
	b.mu.Lock()
	done := b.done
	b.mu.Unlock()
	var last error = errors.New("no answer yet")
	for {
		if procutil.IsClosed(done) {
			return fmt.Errorf("process exited (last probe: %v)", last)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out: %v", last)
		}
		p, err := Probe(b.Addr, 2*time.Second)
		if err == nil {
			err = p.checkSelf(b.Port)
		}
		if err == nil {
			b.NodeID, b.APIVersions = p.Self.NodeID, p.APIVersions
			return nil
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
}

// ProbeResult is what a broker said to Probe.
type ProbeResult struct {
	APIVersions map[int16][2]int16
	Brokers     []kmsg.MetadataResponseBroker
	Controller  int32
	Self        kmsg.MetadataResponseBroker
}

func (p *ProbeResult) checkSelf(port int) error {
	for _, br := range p.Brokers {
		if br.Port == int32(port) && (br.Host == "127.0.0.1" || br.Host == "localhost") {
			p.Self = br
			return nil
		}
	}
	return fmt.Errorf("Metadata lists brokers %v, not 127.0.0.1:%d", p.Brokers, port)
}

// Probe sends ApiVersions v0 and Metadata v1 (all topics) back to back on
// one connection, as kafka-python does first, and checks that the replies
// come in order with the right correlation ids and that the broker
// advertises at least Produce, Fetch, ListOffsets, Metadata and
// ApiVersions.
func Probe(addr string, timeout time.Duration) (*ProbeResult, error) {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	av := kmsg.NewPtrApiVersionsRequest()
	av.Version = 0
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	md.Topics = nil // v1: null means all topics
	var out []byte
	out = appendRequest(out, av, 7001)
	out = appendRequest(out, md, 7002)
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	res := &ProbeResult{APIVersions: map[int16][2]int16{}}
	body, err := readResponse(r, 7001)
	if err != nil {
		return nil, fmt.Errorf("ApiVersions: %w", err)
	}
	avr := kmsg.NewPtrApiVersionsResponse()
	avr.Version = 0
	if err := avr.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("ApiVersions v0 reply: %w", err)
	}
	if avr.ErrorCode != 0 {
		return nil, fmt.Errorf("ApiVersions v0: error code %d", avr.ErrorCode)
	}
	for _, k := range avr.ApiKeys {
		res.APIVersions[k.ApiKey] = [2]int16{k.MinVersion, k.MaxVersion}
	}
	for _, k := range []int16{0, 1, 2, 3, 18} {
		if _, ok := res.APIVersions[k]; !ok {
			return nil, fmt.Errorf("ApiVersions does not advertise key %d", k)
		}
	}
	body, err = readResponse(r, 7002)
	if err != nil {
		return nil, fmt.Errorf("Metadata: %w", err)
	}
	mdr := kmsg.NewPtrMetadataResponse()
	mdr.Version = 1
	if err := mdr.ReadFrom(body); err != nil {
		return nil, fmt.Errorf("Metadata v1 reply: %w", err)
	}
	res.Brokers, res.Controller = mdr.Brokers, mdr.ControllerID
	return res, nil
}

// appendRequest frames req with a v1 request header (both requests used
// here are non-flexible).
func appendRequest(dst []byte, req kmsg.Request, corr int32) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.Key()))
	dst = binary.BigEndian.AppendUint16(dst, uint16(req.GetVersion()))
	dst = binary.BigEndian.AppendUint32(dst, uint32(corr))
	id := "herd-compat-probe"
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(id)))
	dst = append(dst, id...)
	dst = req.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}

func readResponse(r io.Reader, corr int32) ([]byte, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int32(binary.BigEndian.Uint32(hdr[:4]))
	if n < 4 || n > 64<<20 {
		return nil, fmt.Errorf("bad response size %d", n)
	}
	if got := int32(binary.BigEndian.Uint32(hdr[4:])); got != corr {
		return nil, fmt.Errorf("correlation id %d, want %d", got, corr)
	}
	body := make([]byte, n-4)
	_, err := io.ReadFull(r, body)
	return body, err
}
