package jute

import "strconv"

// Op codes (ZooDefs.OpCode): the Type of a RequestHeader and of a MultiHeader.
const (
	OpNotification         int32 = 0
	OpCreate               int32 = 1
	OpDelete               int32 = 2
	OpExists               int32 = 3
	OpGetData              int32 = 4
	OpSetData              int32 = 5
	OpGetACL               int32 = 6
	OpSetACL               int32 = 7
	OpGetChildren          int32 = 8
	OpSync                 int32 = 9
	OpPing                 int32 = 11
	OpGetChildren2         int32 = 12
	OpCheck                int32 = 13
	OpMulti                int32 = 14
	OpCreate2              int32 = 15
	OpReconfig             int32 = 16
	OpCheckWatches         int32 = 17
	OpRemoveWatches        int32 = 18
	OpCreateContainer      int32 = 19
	OpDeleteContainer      int32 = 20
	OpCreateTTL            int32 = 21
	OpMultiRead            int32 = 22
	OpAuth                 int32 = 100
	OpSetWatches           int32 = 101
	OpSASL                 int32 = 102
	OpGetEphemerals        int32 = 103
	OpGetAllChildrenNumber int32 = 104
	OpSetWatches2          int32 = 105
	OpAddWatch             int32 = 106
	OpWhoAmI               int32 = 107
	OpCreateSession        int32 = -10
	OpCloseSession         int32 = -11
	// OpError is the type of a failed op's result inside a multi response.
	OpError int32 = -1
)

// Special xids. Ordinary requests use positive client-chosen xids; these
// mark packets that are not part of the in-order request/reply stream on
// some clients (see the reference, section 3).
const (
	XidNotification int32 = -1 // server -> client watch event
	XidPing         int32 = -2
	XidAuth         int32 = -4
	XidSetWatches   int32 = -8
)

// Error codes (KeeperException.Code), carried in ReplyHeader.Err and in multi
// results.
const (
	ErrOK                           int32 = 0
	ErrSystemError                  int32 = -1
	ErrRuntimeInconsistency         int32 = -2
	ErrDataInconsistency            int32 = -3
	ErrConnectionLoss               int32 = -4
	ErrMarshallingError             int32 = -5
	ErrUnimplemented                int32 = -6
	ErrOperationTimeout             int32 = -7
	ErrBadArguments                 int32 = -8
	ErrUnknownSession               int32 = -12
	ErrNewConfigNoQuorum            int32 = -13
	ErrReconfigInProgress           int32 = -14
	ErrAPIError                     int32 = -100
	ErrNoNode                       int32 = -101
	ErrNoAuth                       int32 = -102
	ErrBadVersion                   int32 = -103
	ErrNoChildrenForEphemerals      int32 = -108
	ErrNodeExists                   int32 = -110
	ErrNotEmpty                     int32 = -111
	ErrSessionExpired               int32 = -112
	ErrInvalidCallback              int32 = -113
	ErrInvalidACL                   int32 = -114
	ErrAuthFailed                   int32 = -115
	ErrSessionMoved                 int32 = -118
	ErrNotReadOnly                  int32 = -119
	ErrEphemeralOnLocalSession      int32 = -120
	ErrNoWatcher                    int32 = -121
	ErrRequestTimeout               int32 = -122
	ErrReconfigDisabled             int32 = -123
	ErrSessionClosedRequireSASLAuth int32 = -124
	ErrQuotaExceeded                int32 = -125
	ErrThrottledOp                  int32 = -127
)

var errNames = map[int32]string{
	ErrOK:                           "OK",
	ErrSystemError:                  "SystemError",
	ErrRuntimeInconsistency:         "RuntimeInconsistency",
	ErrDataInconsistency:            "DataInconsistency",
	ErrConnectionLoss:               "ConnectionLoss",
	ErrMarshallingError:             "MarshallingError",
	ErrUnimplemented:                "Unimplemented",
	ErrOperationTimeout:             "OperationTimeout",
	ErrBadArguments:                 "BadArguments",
	ErrUnknownSession:               "UnknownSession",
	ErrNewConfigNoQuorum:            "NewConfigNoQuorum",
	ErrReconfigInProgress:           "ReconfigInProgress",
	ErrAPIError:                     "APIError",
	ErrNoNode:                       "NoNode",
	ErrNoAuth:                       "NoAuth",
	ErrBadVersion:                   "BadVersion",
	ErrNoChildrenForEphemerals:      "NoChildrenForEphemerals",
	ErrNodeExists:                   "NodeExists",
	ErrNotEmpty:                     "NotEmpty",
	ErrSessionExpired:               "SessionExpired",
	ErrInvalidCallback:              "InvalidCallback",
	ErrInvalidACL:                   "InvalidACL",
	ErrAuthFailed:                   "AuthFailed",
	ErrSessionMoved:                 "SessionMoved",
	ErrNotReadOnly:                  "NotReadOnly",
	ErrEphemeralOnLocalSession:      "EphemeralOnLocalSession",
	ErrNoWatcher:                    "NoWatcher",
	ErrRequestTimeout:               "RequestTimeout",
	ErrReconfigDisabled:             "ReconfigDisabled",
	ErrSessionClosedRequireSASLAuth: "SessionClosedRequireSASLAuth",
	ErrQuotaExceeded:                "QuotaExceeded",
	ErrThrottledOp:                  "ThrottledOp",
}

// ErrName returns the name of an error code ("NoNode" for -101), the Err
// constant's name without its prefix, or "Unknown(code)" for a code ZooKeeper
// does not define.
func ErrName(code int32) string {
	if n, ok := errNames[code]; ok {
		return n
	}
	return "Unknown(" + strconv.Itoa(int(code)) + ")"
}

// Watch event types (Watcher.Event.EventType), WatcherEvent.Type.
const (
	EventNone                   int32 = -1
	EventNodeCreated            int32 = 1
	EventNodeDeleted            int32 = 2
	EventNodeDataChanged        int32 = 3
	EventNodeChildrenChanged    int32 = 4
	EventDataWatchRemoved       int32 = 5
	EventChildWatchRemoved      int32 = 6
	EventPersistentWatchRemoved int32 = 7
)

// Keeper states (Watcher.Event.KeeperState), WatcherEvent.State. The server
// sends node events with StateSyncConnected; the others are client-side.
const (
	StateUnknown           int32 = -1
	StateDisconnected      int32 = 0
	StateSyncConnected     int32 = 3
	StateAuthFailed        int32 = 4
	StateConnectedReadOnly int32 = 5
	StateSaslAuthenticated int32 = 6
	StateClosed            int32 = 7
	StateExpired           int32 = -112
)

// ACL permission bits (ZooDefs.Perms).
const (
	PermRead   int32 = 1
	PermWrite  int32 = 2
	PermCreate int32 = 4
	PermDelete int32 = 8
	PermAdmin  int32 = 16
	PermAll    int32 = PermRead | PermWrite | PermCreate | PermDelete | PermAdmin
)

// Create modes (CreateMode), the Flags of a create request. Any other value is
// answered with ErrBadArguments.
const (
	ModePersistent                  int32 = 0
	ModeEphemeral                   int32 = 1
	ModePersistentSequential        int32 = 2
	ModeEphemeralSequential         int32 = 3
	ModeContainer                   int32 = 4
	ModePersistentWithTTL           int32 = 5
	ModePersistentSequentialWithTTL int32 = 6
)

// Watcher kinds for checkWatches/removeWatches (Watcher.WatcherType).
const (
	WatcherChildren int32 = 1
	WatcherData     int32 = 2
	WatcherAny      int32 = 3
)

// addWatch modes (AddWatchMode).
const (
	AddWatchPersistent          int32 = 0
	AddWatchPersistentRecursive int32 = 1
)
