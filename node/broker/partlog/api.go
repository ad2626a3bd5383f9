// Package partlog stores Kafka partition logs on a node's disk, sans-I/O: it
// never touches files itself but submits node.DiskOp values through its Host
// and continues when the owner hands back the completion.
//
// One Dir is one entry of log.dirs; it holds a Log per topic-partition, in a
// subdirectory named "<topic>-<partition>" as Kafka does, and the dir-level
// checkpoint files (recovery point, log start offset, high watermark).
//
// Everything here runs on the owning core's single thread. Callbacks are
// always called later, from the owner's delivery of a disk completion (or from
// Tick), never from inside the call that registered them.
//
// The on-disk layout is Kafka's (partition directories of 20-digit segment
// files with .log, .index and .timeindex; partition.metadata; the dir-level
// checkpoint files; .kafka_cleanshutdown), described with the flush and
// recovery rules in DESIGN-partlog.md.
//
// Files: dir.go (Dir: create, delete, Tick, checkpoints, Close), log.go (Log:
// Append, flush, high watermark, roll, retention), read.go (Read,
// OffsetForTimestamp, index loading), recover.go (OpenDir and the segment
// scan), batch.go (RecordBatch v2 header), index.go, segment.go,
// checkpoint.go (file formats, topic config overrides).
package partlog

import (
	"errors"
	"time"

	"herd/node"
	"herd/node/trash"
)

// Host is what a Dir needs from its owner.
type Host struct {
	// Disk submits op; the owner must call done exactly once with op's
	// completion event (node.Env.Disk plus a routing table OpID -> done),
	// later, never from inside Disk. Completions must arrive in submission
	// order (node.Env guarantees it); partlog relies on that.
	Disk func(op node.DiskOp, done func(ev node.Event))
	// Now is the owner's monotonic clock (flush.ms, segment roll by time).
	Now func() node.Time
	// WallClock is milliseconds since the Unix epoch (record timestamps,
	// retention by time, LogAppendTime).
	WallClock func() int64
	// Logf logs a debug line (may be nil).
	Logf func(format string, args ...any)
	// Recycle hands a read's buffer back to the shell (node.Env.Recycle;
	// may be nil): Read recycles the buffers it read and does not return.
	Recycle func(data []byte)
	// After calls fn after d, on the owner's thread (a timer; at most one
	// is pending, a later call replaces it). It paces the emptying of
	// deleted segments (node/trash). Nil: their steps follow each other
	// without a pause.
	After func(d time.Duration, fn func())
	// Trash paces that emptying (zero: node/trash's defaults).
	Trash trash.Config
	// Bug plants a named bug for the simulator's checkers to catch (see
	// the Bug* constants); "" in production.
	Bug string
}

// Planted bugs (Host.Bug). Each breaks one promise the broker scenario's
// checker holds the log to.
const (
	// BugAckBeforeFlush acknowledges an append (and advances the high
	// watermark) once written, without waiting for the fsync the flush
	// policy demands.
	BugAckBeforeFlush = "ack-before-flush"
	// BugAckBeforeWrite acknowledges an append (and advances the high
	// watermark) once its write is submitted, without waiting for the
	// write to complete: a killed process takes writes not yet done with it.
	BugAckBeforeWrite = "ack-before-write"
	// BugReuseOffset restarts a recovered log at its checkpointed recovery
	// point instead of the recovered end, so new appends reuse offsets.
	BugReuseOffset = "reuse-offset"
	// BugServeTorn skips the CRC check when recovery scans a segment and
	// when a read serves a batch.
	BugServeTorn = "serve-torn"
	// BugStartBeforeCheckpoint lets retention advance the log start
	// offset readers see before the checkpoint that records it is durable:
	// a crash then brings the old start (and its segments) back.
	BugStartBeforeCheckpoint = "start-before-checkpoint"
)

// Config is the per-log configuration: broker defaults from
// server.properties with per-topic overrides applied.
type Config struct {
	SegmentBytes       int64 // log.segment.bytes / segment.bytes (default 1 GiB)
	SegmentMs          int64 // log.roll.ms / segment.ms (default 7 days)
	RetentionBytes     int64 // log.retention.bytes / retention.bytes; -1 = unlimited (default)
	RetentionMs        int64 // log.retention.ms|minutes|hours / retention.ms; -1 = unlimited (default 7 days)
	IndexIntervalBytes int   // log.index.interval.bytes / index.interval.bytes (default 4096)
	SegmentIndexBytes  int   // log.index.size.max.bytes / segment.index.bytes (default 10 MiB)
	MaxMessageBytes    int   // message.max.bytes / max.message.bytes: largest batch accepted
	// FlushMessages: fsync once this many records are unflushed
	// (log.flush.interval.messages / flush.messages). 1 = fsync every append
	// before acknowledging it. <=0 or math.MaxInt64 = never by count (Kafka's default).
	FlushMessages int64
	// FlushMs: fsync unflushed data this long after it was appended
	// (log.flush.interval.ms / flush.ms). <=0 = never by time (Kafka's default).
	FlushMs int64
	// LogAppendTime: message.timestamp.type=LogAppendTime (log.message.
	// timestamp.type at broker level). The broker's wall clock replaces
	// each batch's maxTimestamp on append.
	LogAppendTime bool
}

// DefaultConfig is Kafka's default log configuration.
func DefaultConfig() Config {
	return Config{
		SegmentBytes:       1 << 30,
		SegmentMs:          7 * 24 * 3600 * 1000,
		RetentionBytes:     -1,
		RetentionMs:        7 * 24 * 3600 * 1000,
		IndexIntervalBytes: 4096,
		SegmentIndexBytes:  10 << 20,
		MaxMessageBytes:    1048588,
		FlushMessages:      0,
		FlushMs:            0,
	}
}

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int32
}

// Errors returned by Append and Read. The broker maps them to Kafka error
// codes (CORRUPT_MESSAGE, INVALID_RECORD, MESSAGE_TOO_LARGE,
// UNSUPPORTED_FOR_MESSAGE_FORMAT, OFFSET_OUT_OF_RANGE, KAFKA_STORAGE_ERROR).
var (
	ErrCorrupt          = errors.New("partlog: corrupt record batch (bad length or CRC)")
	ErrInvalidRecord    = errors.New("partlog: invalid record batch")
	ErrTooLarge         = errors.New("partlog: record batch larger than max.message.bytes")
	ErrUnsupportedMagic = errors.New("partlog: message format (magic) older than v2 is not supported")
	ErrOffsetOutOfRange = errors.New("partlog: offset out of range")
	ErrStorage          = errors.New("partlog: storage error")
	ErrClosed           = errors.New("partlog: log closed or deleted")
)
