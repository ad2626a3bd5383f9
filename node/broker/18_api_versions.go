package broker

import (
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// ApiVersions: v0-v3.
//
// v3 is the first flexible version and carries the client's software name
// and version (librdkafka opens with v3). kgo opens with v4 or v5: a version
// above v3 gets the KIP-511 answer, a v0 response with UNSUPPORTED_VERSION
// listing only ApiVersions' own range, and the client retries at v3.
//
// The advertisement lists every registered key with the range its file
// serves; nothing else is advertised.

const apiVersionsKey = 18

func init() { register(apiVersionsKey, "ApiVersions", 0, 3, handleApiVersions) }

func handleApiVersions(b *Broker, r *request, kreq kmsg.Request) {
	req := kreq.(*kmsg.ApiVersionsRequest)
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	if req.Version >= 3 && (!validSoftware(req.ClientSoftwareName) || !validSoftware(req.ClientSoftwareVersion)) {
		resp.ErrorCode = kerr.InvalidRequest.Code
	}
	resp.ApiKeys = advertisedKeys()
	b.reply(r, resp)
}

func advertisedKeys() []kmsg.ApiVersionsResponseApiKey {
	var keys []kmsg.ApiVersionsResponseApiKey
	for key := range apis {
		if a := &apis[key]; a.handle != nil {
			keys = append(keys, kmsg.ApiVersionsResponseApiKey{ApiKey: int16(key), MinVersion: a.min, MaxVersion: a.max})
		}
	}
	return keys
}

// unsupportedApiVersions is Kafka's answer to an ApiVersions request of a
// version it does not know.
func unsupportedApiVersions() *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = kerr.UnsupportedVersion.Code
	a := &apis[apiVersionsKey]
	resp.ApiKeys = []kmsg.ApiVersionsResponseApiKey{{ApiKey: apiVersionsKey, MinVersion: a.min, MaxVersion: a.max}}
	return resp
}

// invalidApiVersions answers an ApiVersions request whose body does not
// parse: librdkafka retries at v0 on INVALID_REQUEST.
func invalidApiVersions(version int16) *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = version
	resp.ErrorCode = kerr.InvalidRequest.Code
	resp.ApiKeys = advertisedKeys()
	return resp
}

// validSoftware checks a client software name or version as Kafka does:
// [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?
func validSoftware(s string) bool {
	if s == "" {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !alnum(c) && (i == 0 || i == len(s)-1 || c != '-' && c != '.') {
			return false
		}
	}
	return true
}
