package jute

import (
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrInvalidPath is wrapped by every ValidatePath error; the server answers it
// with ErrBadArguments.
var ErrInvalidPath = errors.New("jute: invalid path")

// ValidatePath reports whether path is a valid znode path, with the result of
// ZooKeeper's PathUtils.validatePath(path, sequential):
//
//   - not empty, and starts with '/';
//   - "/" (the root) is valid; otherwise no trailing '/';
//   - no empty segment ("//"), no "." or ".." segment;
//   - no NUL, and no character in U+0001–U+001F, U+007F–U+009F,
//     U+D800–U+F8FF or U+FFF0–U+FFFF.
//
// With sequential set, path is checked as if a sequence number had been
// appended (PathUtils appends "1"), so "/queue/" and "/lock/n-" pass. That is
// the check a client library makes before sending a sequential create. The
// server appends the real suffix (SequentialSuffix) and then validates the
// final name with sequential=false, as PrepRequestProcessor does.
//
// Two Java details decide the non-ASCII cases. Java checks UTF-16 code units,
// so any code point above U+FFFF (sent as a surrogate pair, U+D800–U+DFFF) is
// rejected. And Java decodes the wire bytes with replacement, turning
// malformed UTF-8 into U+FFFD, which is in the forbidden U+FFF0–U+FFFF range,
// so a path that is not valid UTF-8 is rejected here too.
func ValidatePath(path string, sequential bool) error {
	if sequential {
		path += "1"
	}
	if path == "" {
		return fmt.Errorf("%w: path length must be > 0", ErrInvalidPath)
	}
	if path[0] != '/' {
		return fmt.Errorf("%w: %q must start with /", ErrInvalidPath, path)
	}
	if path == "/" {
		return nil
	}
	if path[len(path)-1] == '/' {
		return fmt.Errorf("%w: %q must not end with /", ErrInvalidPath, path)
	}
	// Walk segment by segment; path[0] is '/', so every segment is preceded
	// by exactly one '/'.
	for rest := path[1:]; ; {
		seg, tail, more := strings.Cut(rest, "/")
		switch seg {
		case "":
			return fmt.Errorf("%w: %q has an empty node name", ErrInvalidPath, path)
		case ".", "..":
			return fmt.Errorf("%w: %q is relative", ErrInvalidPath, path)
		}
		for i, w := 0, 0; i < len(seg); i += w {
			if c := seg[i]; c > 0x1f && c < 0x7f {
				w = 1 // printable ASCII: allowed, and every path a server reads checks it
				continue
			}
			var r rune
			r, w = utf8.DecodeRuneInString(seg[i:])
			if r == utf8.RuneError && w == 1 {
				return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidPath, path)
			}
			if r == 0 {
				return fmt.Errorf("%w: %q contains a null character", ErrInvalidPath, path)
			}
			if forbiddenPathRune(r) {
				return fmt.Errorf("%w: %q contains invalid character %U", ErrInvalidPath, path, r)
			}
		}
		if !more {
			return nil
		}
		rest = tail
	}
}

// forbiddenPathRune reports the characters PathUtils rejects, with code points
// above U+FFFF standing for their UTF-16 surrogates.
func forbiddenPathRune(r rune) bool {
	return r <= 0x1f ||
		r >= 0x7f && r <= 0x9f ||
		r >= 0xd800 && r <= 0xf8ff ||
		r >= 0xfff0
}

// SequentialSuffix returns the suffix ZooKeeper appends to a sequential
// node's name: the parent's counter formatted as Java's "%010d". A negative
// counter (after int32 overflow) keeps its sign: -2147483648 becomes
// "-2147483648" and -5 "-000000005", as in Java.
func SequentialSuffix(counter int32) string {
	return fmt.Sprintf("%010d", counter)
}

// DigestID returns the id of the digest ACL scheme for user and password:
// "user:" + base64(SHA-1("user:password")), as DigestAuthenticationProvider
// .generateDigest and kazoo's make_digest_acl_credential compute it. user must
// not contain ':' (the server splits credentials at the first colon; see
// DigestAuthID).
func DigestID(user, password string) string {
	return DigestAuthID(user + ":" + password)
}

// DigestAuthID returns the digest id for the credentials of a digest
// AuthPacket ("user:password"), as generateDigest does: the part before the
// first ':' (the whole string if there is none), a ':', and the base64 SHA-1 of
// the whole credential string.
func DigestAuthID(credentials string) string {
	user, _, _ := strings.Cut(credentials, ":")
	sum := sha1.Sum([]byte(credentials))
	return user + ":" + base64.StdEncoding.EncodeToString(sum[:])
}
