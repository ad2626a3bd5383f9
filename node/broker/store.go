package broker

import (
	"herd/node/broker/partlog"
	"herd/node/trash"
)

// logDir is the subset of *partlog.Dir the broker uses, behind an interface
// so tests can run the core on an in-memory stand-in (memstore_test.go).
// dirAdapter turns a *partlog.Dir into one.
type logDir interface {
	Logs() []partitionLog
	Log(tp partlog.TopicPartition) partitionLog
	CreateLog(tp partlog.TopicPartition, topicID [16]byte, overrides map[string]string, done func(partitionLog, error))
	DeleteLog(tp partlog.TopicPartition, done func(error))
	OnHighWatermark(fn func(partitionLog))
	OnFailure(fn func(error))
	Tick()
	TrashStats() trash.Stats
	Close(done func(error))
}

// partitionLog is the subset of *partlog.Log the broker uses; *partlog.Log
// satisfies it as it is.
type partitionLog interface {
	TopicPartition() partlog.TopicPartition
	TopicID() [16]byte
	Overrides() map[string]string
	Config() partlog.Config
	LogStartOffset() int64
	HighWatermark() int64
	Append(batches []byte, leaderEpoch int32, done func(err error)) (base, last, logAppendTime int64, err error)
	Read(offset int64, maxBytes int, minOneBatch bool, done func(partlog.ReadResult))
	OffsetForTimestamp(ts int64, done func(offset, timestamp int64, err error))
}

var _ partitionLog = (*partlog.Log)(nil)

// openDirFunc opens a log directory (partlog.OpenDir, or a stand-in).
type openDirFunc func(h partlog.Host, path string, defaults partlog.Config, done func(logDir, error))

// openPartlogDir opens a real partlog.Dir.
func openPartlogDir(h partlog.Host, path string, defaults partlog.Config, done func(logDir, error)) {
	partlog.OpenDir(h, path, defaults, func(d *partlog.Dir, err error) {
		if err != nil {
			done(nil, err)
			return
		}
		done(dirAdapter{d}, nil)
	})
}

// dirAdapter presents a *partlog.Dir as a logDir.
type dirAdapter struct{ d *partlog.Dir }

func (a dirAdapter) Logs() []partitionLog {
	logs := a.d.Logs()
	out := make([]partitionLog, len(logs))
	for i, l := range logs {
		out[i] = l
	}
	return out
}

func (a dirAdapter) Log(tp partlog.TopicPartition) partitionLog {
	if l := a.d.Log(tp); l != nil {
		return l
	}
	return nil // a nil *Log must not become a non-nil interface
}

func (a dirAdapter) CreateLog(tp partlog.TopicPartition, topicID [16]byte, overrides map[string]string, done func(partitionLog, error)) {
	a.d.CreateLog(tp, topicID, overrides, func(l *partlog.Log, err error) {
		if err != nil || l == nil {
			done(nil, err)
			return
		}
		done(l, nil)
	})
}

func (a dirAdapter) DeleteLog(tp partlog.TopicPartition, done func(error)) { a.d.DeleteLog(tp, done) }

func (a dirAdapter) OnHighWatermark(fn func(partitionLog)) {
	a.d.OnHighWatermark(func(l *partlog.Log) { fn(l) })
}

func (a dirAdapter) OnFailure(fn func(error)) { a.d.OnFailure(fn) }

func (a dirAdapter) Tick()                   { a.d.Tick() }
func (a dirAdapter) TrashStats() trash.Stats { return a.d.TrashStats() }
func (a dirAdapter) Close(done func(error))  { a.d.Close(done) }
