package broker

import (
	"encoding/binary"
	"fmt"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// api is one served API key: the versions served and the handler. Each
// handler answers exactly once, through b.reply or b.noReply, now or from a
// later callback.
type api struct {
	name     string
	min, max int16
	handle   func(b *Broker, r *request, req kmsg.Request)
}

// apis is indexed by API key; a nil handle means the key is not served.
// Each NN_name.go file registers its key from init.
var apis [128]api

func register(key int16, name string, min, max int16, handle func(*Broker, *request, kmsg.Request)) {
	apis[key] = api{name: name, min: min, max: max, handle: handle}
}

// request decodes one request frame and starts its handler.
func (b *Broker) request(c *conn, body, frame []byte) {
	if len(body) < 10 {
		b.drop(c, "request shorter than its header")
		return
	}
	key := int16(binary.BigEndian.Uint16(body[0:]))
	version := int16(binary.BigEndian.Uint16(body[2:]))
	corr := int32(binary.BigEndian.Uint32(body[4:]))
	r := &request{c: c, key: key, version: version, corr: corr, frame: frame}

	if key == apiVersionsKey && (version < 0 || version > apis[apiVersionsKey].max) {
		// KIP-511: the body of a newer ApiVersions cannot be parsed, so
		// answer what every client understands, before looking at it.
		c.queue = append(c.queue, r)
		b.reply(r, unsupportedApiVersions())
		return
	}
	if key < 0 || int(key) >= len(apis) || apis[key].handle == nil {
		// As Kafka: an unknown key closes the connection (kafka-python's
		// version probing relies on it).
		b.drop(c, fmt.Sprintf("unsupported API key %d", key))
		return
	}
	a := &apis[key]
	if version < a.min || version > a.max {
		b.drop(c, fmt.Sprintf("%s v%d is outside the served v%d-v%d", a.name, version, a.min, a.max))
		return
	}
	kreq := kmsg.RequestForKey(key)
	if kreq == nil {
		b.drop(c, fmt.Sprintf("unsupported API key %d", key))
		return
	}
	kreq.SetVersion(version)
	rest := body[8:]
	// The client id is a nullable non-compact string in every header
	// version.
	idLen := int(int16(binary.BigEndian.Uint16(rest)))
	rest = rest[2:]
	if idLen > 0 {
		if idLen > len(rest) {
			b.drop(c, "malformed request header")
			return
		}
		r.clientID = string(rest[:idLen])
		rest = rest[idLen:]
	}
	if kreq.IsFlexible() {
		var ok bool
		if rest, ok = skipTags(rest); !ok {
			b.drop(c, "malformed request header tags")
			return
		}
	}
	if err := kreq.ReadFrom(rest); err != nil {
		if key == apiVersionsKey {
			c.queue = append(c.queue, r)
			b.reply(r, invalidApiVersions(version))
			return
		}
		b.drop(c, fmt.Sprintf("malformed %s v%d request: %v", a.name, version, err))
		return
	}
	c.queue = append(c.queue, r)
	a.handle(b, r, kreq)
}

// skipTags skips a tagged-field section.
func skipTags(b []byte) ([]byte, bool) {
	n, b, ok := uvarint(b)
	if !ok || n > uint64(len(b)) {
		return nil, false
	}
	for ; n > 0; n-- {
		if _, b, ok = uvarint(b); !ok {
			return nil, false
		}
		var size uint64
		if size, b, ok = uvarint(b); !ok || size > uint64(len(b)) {
			return nil, false
		}
		b = b[size:]
	}
	return b, true
}

func uvarint(b []byte) (uint64, []byte, bool) {
	v, n := binary.Uvarint(b)
	if n <= 0 || v > 1<<31 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// reply frames resp and completes r's slot. Response header v1 (a tag
// section after the correlation id) goes with flexible versions, except for
// ApiVersions, whose response header is always v0 so that a client can read
// it whatever version it asked for.
func (b *Broker) reply(r *request, resp kmsg.Response) {
	b.replySized(r, resp, 0)
}

// replySized is reply with a hint of the body's size (Fetch), to build the
// frame in one allocation.
func (b *Broker) replySized(r *request, resp kmsg.Response, hint int) {
	out := make([]byte, 8, 9+hint+256)
	if resp.IsFlexible() && resp.Key() != apiVersionsKey {
		out = append(out, 0)
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	binary.BigEndian.PutUint32(out[4:], uint32(r.corr))
	b.finish(r, out)
}

// noReply completes r's slot without sending anything (acks=0 Produce).
func (b *Broker) noReply(r *request) { b.finish(r, nil) }
