package jute

// The records of zookeeper.jute that travel between client and server. Field
// order is the wire order; each Decode overwrites every field, so a record
// value can be reused.

// ConnectRequest opens or resumes a session. It is the first packet on a
// connection and has no RequestHeader.
//
// The trailing readOnly byte is not in zookeeper.jute: the Java client, the
// C client and kazoo append it (45 bytes with a 16-byte passwd), go-zookeeper
// v1.0.4 does not (44 bytes). The server must answer in kind, since the C
// client needs the byte and go-zookeeper does not expect it, so HasReadOnly
// records whether it was there.
type ConnectRequest struct {
	ProtocolVersion int32
	LastZxidSeen    int64
	TimeOut         int32 // requested session timeout, ms
	SessionID       int64 // 0 for a new session
	Passwd          []byte
	ReadOnly        bool // meaningful only if HasReadOnly
	HasReadOnly     bool // the readOnly byte was present; Encode writes it iff set
}

func (r *ConnectRequest) Encode(e *Encoder) {
	e.Int(r.ProtocolVersion)
	e.Long(r.LastZxidSeen)
	e.Int(r.TimeOut)
	e.Long(r.SessionID)
	e.Buffer(r.Passwd)
	if r.HasReadOnly {
		e.Bool(r.ReadOnly)
	}
}

func (r *ConnectRequest) Decode(d *Decoder) {
	r.ProtocolVersion = d.Int()
	r.LastZxidSeen = d.Long()
	r.TimeOut = d.Int()
	r.SessionID = d.Long()
	r.Passwd = d.Buffer()
	// ZooKeeperServer reads the byte if any input is left and treats its
	// absence as an old client; more than one extra byte is left for Done.
	r.HasReadOnly = d.err == nil && d.Remaining() > 0
	r.ReadOnly = r.HasReadOnly && d.Bool()
}

// ConnectResponse answers a ConnectRequest, again without a header. The
// readOnly byte follows the same rule: the server writes it iff the request
// carried it. Clients need Passwd to be exactly 16 bytes (the C client copies
// a fixed 16).
type ConnectResponse struct {
	ProtocolVersion int32
	TimeOut         int32 // negotiated timeout, ms; <= 0 tells the client its session expired
	SessionID       int64
	Passwd          []byte
	ReadOnly        bool
	HasReadOnly     bool
}

func (r *ConnectResponse) Encode(e *Encoder) {
	e.Int(r.ProtocolVersion)
	e.Int(r.TimeOut)
	e.Long(r.SessionID)
	e.Buffer(r.Passwd)
	if r.HasReadOnly {
		e.Bool(r.ReadOnly)
	}
}

func (r *ConnectResponse) Decode(d *Decoder) {
	r.ProtocolVersion = d.Int()
	r.TimeOut = d.Int()
	r.SessionID = d.Long()
	r.Passwd = d.Buffer()
	r.HasReadOnly = d.err == nil && d.Remaining() > 0
	r.ReadOnly = r.HasReadOnly && d.Bool()
}

// RequestHeader precedes every request body after the handshake.
type RequestHeader struct {
	Xid  int32
	Type int32 // an Op constant
}

func (r *RequestHeader) Encode(e *Encoder) { e.Int(r.Xid); e.Int(r.Type) }
func (r *RequestHeader) Decode(d *Decoder) { r.Xid = d.Int(); r.Type = d.Int() }

// ReplyHeader precedes every reply and notification. A reply with Err != 0
// has no body.
type ReplyHeader struct {
	Xid  int32
	Zxid int64
	Err  int32
}

func (r *ReplyHeader) Encode(e *Encoder) { e.Int(r.Xid); e.Long(r.Zxid); e.Int(r.Err) }
func (r *ReplyHeader) Decode(d *Decoder) { r.Xid = d.Int(); r.Zxid = d.Long(); r.Err = d.Int() }

// Stat is a znode's metadata as clients see it: 68 bytes on the wire. It is
// also the whole body of the exists, setData and setACL responses.
type Stat struct {
	Czxid          int64
	Mzxid          int64
	Ctime          int64 // ms since the epoch
	Mtime          int64
	Version        int32
	Cversion       int32
	Aversion       int32
	EphemeralOwner int64
	DataLength     int32
	NumChildren    int32
	Pzxid          int64
}

// StatSize is the encoded size of a Stat.
const StatSize = 68

func (s *Stat) Encode(e *Encoder) {
	e.Long(s.Czxid)
	e.Long(s.Mzxid)
	e.Long(s.Ctime)
	e.Long(s.Mtime)
	e.Int(s.Version)
	e.Int(s.Cversion)
	e.Int(s.Aversion)
	e.Long(s.EphemeralOwner)
	e.Int(s.DataLength)
	e.Int(s.NumChildren)
	e.Long(s.Pzxid)
}

func (s *Stat) Decode(d *Decoder) {
	s.Czxid = d.Long()
	s.Mzxid = d.Long()
	s.Ctime = d.Long()
	s.Mtime = d.Long()
	s.Version = d.Int()
	s.Cversion = d.Int()
	s.Aversion = d.Int()
	s.EphemeralOwner = d.Long()
	s.DataLength = d.Int()
	s.NumChildren = d.Int()
	s.Pzxid = d.Long()
}

// ID is an identity: a scheme ("world", "digest", "ip", "auth", "super") and
// an id within it ("anyone", "user:base64digest", "10.0.0.0/8").
type ID struct {
	Scheme string
	ID     string
}

func (r *ID) Encode(e *Encoder) { e.String(r.Scheme); e.String(r.ID) }
func (r *ID) Decode(d *Decoder) { r.Scheme = d.String(); r.ID = d.String() }

// ACL grants Perms (Perm bits) to an identity.
type ACL struct {
	Perms int32
	ID    ID
}

func (r *ACL) Encode(e *Encoder) { e.Int(r.Perms); r.ID.Encode(e) }
func (r *ACL) Decode(d *Decoder) { r.Perms = d.Int(); r.ID.Decode(d) }

// minACLSize is the smallest encoding of an ACL: perms plus two empty strings.
const minACLSize = 4 + 4 + 4

func encodeACLs(e *Encoder, v []ACL) { encodeVector(e, v, func(e *Encoder, a *ACL) { a.Encode(e) }) }
func decodeACLs(d *Decoder) []ACL {
	return decodeVector(d, minACLSize, "vector<ACL>", func(d *Decoder, a *ACL) { a.Decode(d) })
}

// CreateRequest is the body of create (1), create2 (15) and createContainer (19).
type CreateRequest struct {
	Path  string
	Data  []byte
	ACL   []ACL
	Flags int32 // a Mode constant
}

func (r *CreateRequest) Encode(e *Encoder) {
	e.String(r.Path)
	e.Buffer(r.Data)
	encodeACLs(e, r.ACL)
	e.Int(r.Flags)
}

func (r *CreateRequest) Decode(d *Decoder) {
	r.Path = d.String()
	r.Data = d.Buffer()
	r.ACL = decodeACLs(d)
	r.Flags = d.Int()
}

// CreateTTLRequest is the body of createTTL (21): CreateRequest plus the TTL
// in ms.
type CreateTTLRequest struct {
	Path  string
	Data  []byte
	ACL   []ACL
	Flags int32
	TTL   int64
}

func (r *CreateTTLRequest) Encode(e *Encoder) {
	e.String(r.Path)
	e.Buffer(r.Data)
	encodeACLs(e, r.ACL)
	e.Int(r.Flags)
	e.Long(r.TTL)
}

func (r *CreateTTLRequest) Decode(d *Decoder) {
	r.Path = d.String()
	r.Data = d.Buffer()
	r.ACL = decodeACLs(d)
	r.Flags = d.Int()
	r.TTL = d.Long()
}

// CreateResponse answers create (1), and create ops inside a multi.
type CreateResponse struct{ Path string }

func (r *CreateResponse) Encode(e *Encoder) { e.String(r.Path) }
func (r *CreateResponse) Decode(d *Decoder) { r.Path = d.String() }

// Create2Response answers create2, createContainer and createTTL.
type Create2Response struct {
	Path string
	Stat Stat
}

func (r *Create2Response) Encode(e *Encoder) { e.String(r.Path); r.Stat.Encode(e) }
func (r *Create2Response) Decode(d *Decoder) { r.Path = d.String(); r.Stat.Decode(d) }

// DeleteRequest is the body of delete (2). Version -1 matches any version.
type DeleteRequest struct {
	Path    string
	Version int32
}

func (r *DeleteRequest) Encode(e *Encoder) { e.String(r.Path); e.Int(r.Version) }
func (r *DeleteRequest) Decode(d *Decoder) { r.Path = d.String(); r.Version = d.Int() }

// ExistsRequest is the body of exists (3); the response body is a Stat.
type ExistsRequest struct {
	Path  string
	Watch bool
}

func (r *ExistsRequest) Encode(e *Encoder) { e.String(r.Path); e.Bool(r.Watch) }
func (r *ExistsRequest) Decode(d *Decoder) { r.Path = d.String(); r.Watch = d.Bool() }

// GetDataRequest is the body of getData (4), also inside multiRead.
type GetDataRequest struct {
	Path  string
	Watch bool
}

func (r *GetDataRequest) Encode(e *Encoder) { e.String(r.Path); e.Bool(r.Watch) }
func (r *GetDataRequest) Decode(d *Decoder) { r.Path = d.String(); r.Watch = d.Bool() }

// GetDataResponse answers getData, and reconfig (the new /zookeeper/config).
type GetDataResponse struct {
	Data []byte
	Stat Stat
}

func (r *GetDataResponse) Encode(e *Encoder) { e.Buffer(r.Data); r.Stat.Encode(e) }
func (r *GetDataResponse) Decode(d *Decoder) { r.Data = d.Buffer(); r.Stat.Decode(d) }

// SetDataRequest is the body of setData (5); the response body is a Stat.
type SetDataRequest struct {
	Path    string
	Data    []byte
	Version int32
}

func (r *SetDataRequest) Encode(e *Encoder) { e.String(r.Path); e.Buffer(r.Data); e.Int(r.Version) }
func (r *SetDataRequest) Decode(d *Decoder) {
	r.Path = d.String()
	r.Data = d.Buffer()
	r.Version = d.Int()
}

// GetACLRequest is the body of getACL (6).
type GetACLRequest struct{ Path string }

func (r *GetACLRequest) Encode(e *Encoder) { e.String(r.Path) }
func (r *GetACLRequest) Decode(d *Decoder) { r.Path = d.String() }

// GetACLResponse answers getACL.
type GetACLResponse struct {
	ACL  []ACL
	Stat Stat
}

func (r *GetACLResponse) Encode(e *Encoder) { encodeACLs(e, r.ACL); r.Stat.Encode(e) }
func (r *GetACLResponse) Decode(d *Decoder) { r.ACL = decodeACLs(d); r.Stat.Decode(d) }

// SetACLRequest is the body of setACL (7); the response body is a Stat.
type SetACLRequest struct {
	Path    string
	ACL     []ACL
	Version int32
}

func (r *SetACLRequest) Encode(e *Encoder) { e.String(r.Path); encodeACLs(e, r.ACL); e.Int(r.Version) }
func (r *SetACLRequest) Decode(d *Decoder) {
	r.Path = d.String()
	r.ACL = decodeACLs(d)
	r.Version = d.Int()
}

// GetChildrenRequest is the body of getChildren (8) and getChildren2 (12)
// (zookeeper.jute's GetChildren2Request has the same layout), and of
// getChildren inside multiRead.
type GetChildrenRequest struct {
	Path  string
	Watch bool
}

func (r *GetChildrenRequest) Encode(e *Encoder) { e.String(r.Path); e.Bool(r.Watch) }
func (r *GetChildrenRequest) Decode(d *Decoder) { r.Path = d.String(); r.Watch = d.Bool() }

// GetChildrenResponse answers getChildren: child names, not paths.
type GetChildrenResponse struct{ Children []string }

func (r *GetChildrenResponse) Encode(e *Encoder) { e.Strings(r.Children) }
func (r *GetChildrenResponse) Decode(d *Decoder) { r.Children = d.Strings() }

// GetChildren2Response answers getChildren2.
type GetChildren2Response struct {
	Children []string
	Stat     Stat
}

func (r *GetChildren2Response) Encode(e *Encoder) { e.Strings(r.Children); r.Stat.Encode(e) }
func (r *GetChildren2Response) Decode(d *Decoder) { r.Children = d.Strings(); r.Stat.Decode(d) }

// SyncRequest is the body of sync (9).
type SyncRequest struct{ Path string }

func (r *SyncRequest) Encode(e *Encoder) { e.String(r.Path) }
func (r *SyncRequest) Decode(d *Decoder) { r.Path = d.String() }

// SyncResponse answers sync by echoing the path.
type SyncResponse struct{ Path string }

func (r *SyncResponse) Encode(e *Encoder) { e.String(r.Path) }
func (r *SyncResponse) Decode(d *Decoder) { r.Path = d.String() }

// CheckVersionRequest is the body of check (13), which is only valid inside a
// multi.
type CheckVersionRequest struct {
	Path    string
	Version int32
}

func (r *CheckVersionRequest) Encode(e *Encoder) { e.String(r.Path); e.Int(r.Version) }
func (r *CheckVersionRequest) Decode(d *Decoder) { r.Path = d.String(); r.Version = d.Int() }

// CheckWatchesRequest is the body of checkWatches (17).
type CheckWatchesRequest struct {
	Path string
	Type int32 // a Watcher constant
}

func (r *CheckWatchesRequest) Encode(e *Encoder) { e.String(r.Path); e.Int(r.Type) }
func (r *CheckWatchesRequest) Decode(d *Decoder) { r.Path = d.String(); r.Type = d.Int() }

// RemoveWatchesRequest is the body of removeWatches (18).
type RemoveWatchesRequest struct {
	Path string
	Type int32 // a Watcher constant
}

func (r *RemoveWatchesRequest) Encode(e *Encoder) { e.String(r.Path); e.Int(r.Type) }
func (r *RemoveWatchesRequest) Decode(d *Decoder) { r.Path = d.String(); r.Type = d.Int() }

// AuthPacket is the body of auth (100). Type is always 0 in practice; for the
// digest scheme Auth is "user:password".
type AuthPacket struct {
	Type   int32
	Scheme string
	Auth   []byte
}

func (r *AuthPacket) Encode(e *Encoder) { e.Int(r.Type); e.String(r.Scheme); e.Buffer(r.Auth) }
func (r *AuthPacket) Decode(d *Decoder) {
	r.Type = d.Int()
	r.Scheme = d.String()
	r.Auth = d.Buffer()
}

// SetWatches is the body of setWatches (101): the watches a client had on its
// previous connection, to be re-registered (or fired, if they would have
// fired since RelativeZxid).
type SetWatches struct {
	RelativeZxid int64
	DataWatches  []string
	ExistWatches []string
	ChildWatches []string
}

func (r *SetWatches) Encode(e *Encoder) {
	e.Long(r.RelativeZxid)
	e.Strings(r.DataWatches)
	e.Strings(r.ExistWatches)
	e.Strings(r.ChildWatches)
}

func (r *SetWatches) Decode(d *Decoder) {
	r.RelativeZxid = d.Long()
	r.DataWatches = d.Strings()
	r.ExistWatches = d.Strings()
	r.ChildWatches = d.Strings()
}

// SetWatches2 is the body of setWatches2 (105): SetWatches plus persistent
// watches.
type SetWatches2 struct {
	RelativeZxid               int64
	DataWatches                []string
	ExistWatches               []string
	ChildWatches               []string
	PersistentWatches          []string
	PersistentRecursiveWatches []string
}

func (r *SetWatches2) Encode(e *Encoder) {
	e.Long(r.RelativeZxid)
	e.Strings(r.DataWatches)
	e.Strings(r.ExistWatches)
	e.Strings(r.ChildWatches)
	e.Strings(r.PersistentWatches)
	e.Strings(r.PersistentRecursiveWatches)
}

func (r *SetWatches2) Decode(d *Decoder) {
	r.RelativeZxid = d.Long()
	r.DataWatches = d.Strings()
	r.ExistWatches = d.Strings()
	r.ChildWatches = d.Strings()
	r.PersistentWatches = d.Strings()
	r.PersistentRecursiveWatches = d.Strings()
}

// GetSASLRequest is the body of sasl (102).
type GetSASLRequest struct{ Token []byte }

func (r *GetSASLRequest) Encode(e *Encoder) { e.Buffer(r.Token) }
func (r *GetSASLRequest) Decode(d *Decoder) { r.Token = d.Buffer() }

// SetSASLResponse answers sasl.
type SetSASLResponse struct{ Token []byte }

func (r *SetSASLResponse) Encode(e *Encoder) { e.Buffer(r.Token) }
func (r *SetSASLResponse) Decode(d *Decoder) { r.Token = d.Buffer() }

// GetEphemeralsRequest is the body of getEphemerals (103).
type GetEphemeralsRequest struct{ PrefixPath string }

func (r *GetEphemeralsRequest) Encode(e *Encoder) { e.String(r.PrefixPath) }
func (r *GetEphemeralsRequest) Decode(d *Decoder) { r.PrefixPath = d.String() }

// GetEphemeralsResponse answers getEphemerals with the session's ephemeral
// node paths.
type GetEphemeralsResponse struct{ Ephemerals []string }

func (r *GetEphemeralsResponse) Encode(e *Encoder) { e.Strings(r.Ephemerals) }
func (r *GetEphemeralsResponse) Decode(d *Decoder) { r.Ephemerals = d.Strings() }

// GetAllChildrenNumberRequest is the body of getAllChildrenNumber (104).
type GetAllChildrenNumberRequest struct{ Path string }

func (r *GetAllChildrenNumberRequest) Encode(e *Encoder) { e.String(r.Path) }
func (r *GetAllChildrenNumberRequest) Decode(d *Decoder) { r.Path = d.String() }

// GetAllChildrenNumberResponse answers getAllChildrenNumber with the number of
// descendants.
type GetAllChildrenNumberResponse struct{ TotalNumber int32 }

func (r *GetAllChildrenNumberResponse) Encode(e *Encoder) { e.Int(r.TotalNumber) }
func (r *GetAllChildrenNumberResponse) Decode(d *Decoder) { r.TotalNumber = d.Int() }

// AddWatchRequest is the body of addWatch (106).
type AddWatchRequest struct {
	Path string
	Mode int32 // an AddWatch constant
}

func (r *AddWatchRequest) Encode(e *Encoder) { e.String(r.Path); e.Int(r.Mode) }
func (r *AddWatchRequest) Decode(d *Decoder) { r.Path = d.String(); r.Mode = d.Int() }

// ErrorResponse is the body of an OpError result inside a multi response, and
// the whole (4-byte, Err 0) body of the addWatch reply.
type ErrorResponse struct{ Err int32 }

func (r *ErrorResponse) Encode(e *Encoder) { e.Int(r.Err) }
func (r *ErrorResponse) Decode(d *Decoder) { r.Err = d.Int() }

// ClientInfo is one authenticated identity in a whoAmI response.
type ClientInfo struct {
	AuthScheme string
	User       string
}

func (r *ClientInfo) Encode(e *Encoder) { e.String(r.AuthScheme); e.String(r.User) }
func (r *ClientInfo) Decode(d *Decoder) { r.AuthScheme = d.String(); r.User = d.String() }

// WhoAmIResponse answers whoAmI (107), whose request has no body.
type WhoAmIResponse struct{ ClientInfo []ClientInfo }

func (r *WhoAmIResponse) Encode(e *Encoder) {
	encodeVector(e, r.ClientInfo, func(e *Encoder, c *ClientInfo) { c.Encode(e) })
}

func (r *WhoAmIResponse) Decode(d *Decoder) {
	// Each ClientInfo is at least two empty strings.
	r.ClientInfo = decodeVector(d, 8, "vector<ClientInfo>", func(d *Decoder, c *ClientInfo) { c.Decode(d) })
}

// WatcherEvent is the body of a notification (xid -1, op 0).
type WatcherEvent struct {
	Type  int32 // an Event constant
	State int32 // a State constant
	Path  string
}

func (r *WatcherEvent) Encode(e *Encoder) { e.Int(r.Type); e.Int(r.State); e.String(r.Path) }
func (r *WatcherEvent) Decode(d *Decoder) {
	r.Type = d.Int()
	r.State = d.Int()
	r.Path = d.String()
}

// ReconfigRequest is the body of reconfig (16); the response is a
// GetDataResponse.
type ReconfigRequest struct {
	JoiningServers string
	LeavingServers string
	NewMembers     string
	CurConfigID    int64
}

func (r *ReconfigRequest) Encode(e *Encoder) {
	e.String(r.JoiningServers)
	e.String(r.LeavingServers)
	e.String(r.NewMembers)
	e.Long(r.CurConfigID)
}

func (r *ReconfigRequest) Decode(d *Decoder) {
	r.JoiningServers = d.String()
	r.LeavingServers = d.String()
	r.NewMembers = d.String()
	r.CurConfigID = d.Long()
}
