package jute

import (
	"errors"
	"testing"
)

// TestValidatePath covers every rule of PathUtils.validatePath (reference §6).
func TestValidatePath(t *testing.T) {
	for _, tc := range []struct {
		path  string
		seq   bool
		valid bool
	}{
		// root and ordinary paths
		{"/", false, true},
		{"/a", false, true},
		{"/zookeeper/config", false, true},
		{"/a-b_c.d/e f", false, true},
		{"/a/b/c/d/e/f/g", false, true},
		// empty, no leading '/'
		{"", false, false},
		{"a", false, false},
		{"a/b", false, false},
		{" /a", false, false},
		// trailing '/' (only the root may end in '/')
		{"/a/", false, false},
		{"//", false, false},
		// empty segments
		{"//a", false, false},
		{"/a//b", false, false},
		// "." and ".." segments, anywhere; other dot names are fine
		{"/.", false, false},
		{"/..", false, false},
		{"/a/.", false, false},
		{"/a/..", false, false},
		{"/./a", false, false},
		{"/../a", false, false},
		{"/a/./b", false, false},
		{"/a/../b", false, false},
		{"/...", false, true},
		{"/.a", false, true},
		{"/a.", false, true},
		{"/..a", false, true},
		{"/a..", false, true},
		{"/a/.hidden/b..c", false, true},
		// NUL
		{"/a\x00b", false, false},
		{"/\x00", false, false},
		// control characters U+0001-U+001F
		{"/a\x01", false, false},
		{"/a\tb", false, false},
		{"/a\nb", false, false},
		{"/\x1f", false, false},
		{"/\x20", false, true}, // space is the first allowed character
		// U+007F-U+009F
		{"/a\x7f", false, false},
		{"/a\u0080", false, false},
		{"/a\u009f", false, false},
		{"/a\u00a0", false, true},
		{"/~", false, true},
		// U+D800-U+F8FF (private use; surrogates cannot appear in valid UTF-8)
		{"/a\ue000", false, false},
		{"/a\uf8ff", false, false},
		{"/a\ud7ff", false, true},
		{"/a\uf900", false, true},
		// U+FFF0-U+FFFF, including U+FFFD
		{"/a\ufff0", false, false},
		{"/a\ufffd", false, false},
		{"/a\uffff", false, false},
		{"/a\uffef", false, true},
		// above U+FFFF: Java sees a surrogate pair, which is forbidden
		{"/a\U0001F600", false, false},
		{"/a\U00010000", false, false},
		// malformed UTF-8: Java decodes it to U+FFFD, which is forbidden
		{"/a\xff", false, false},
		{"/a\xc3", false, false},
		{"/\xed\xa0\x80", false, false}, // a UTF-8-encoded surrogate
		{"/\xc0\xaf", false, false},     // overlong '/'
		// valid Unicode
		{"/日本/語", false, true},
		{"/é/ü/ß", false, true},
		{"/\u4e00\uac00", false, true},
		// sequential: checked with a suffix appended, so a trailing '/' or
		// a name prefix is fine, but the other rules still hold
		{"/queue/", true, true},
		{"/lock/n-", true, true},
		{"/", true, true},
		{"/a", true, true},
		{"", true, false},
		{"a/", true, false},
		{"//", true, false},
		{"/a//", true, false},
		{"/./", true, false},
		{"/../", true, false},
		{"/a\x01/", true, false},
		{"/queue/" + SequentialSuffix(2), false, true},
	} {
		err := ValidatePath(tc.path, tc.seq)
		if (err == nil) != tc.valid {
			t.Errorf("ValidatePath(%q, %v) = %v, want valid=%v", tc.path, tc.seq, err, tc.valid)
		}
		if err != nil && !errors.Is(err, ErrInvalidPath) {
			t.Errorf("ValidatePath(%q, %v) error %v does not wrap ErrInvalidPath", tc.path, tc.seq, err)
		}
	}
}

// TestValidatePathEveryBMPChar checks each BMP code point in a path segment
// against the ranges PathUtils lists, so a wrong boundary anywhere shows up.
func TestValidatePathEveryBMPChar(t *testing.T) {
	for r := rune(0); r <= 0xffff; r++ {
		if r >= 0xd800 && r <= 0xdfff {
			continue // not encodable in UTF-8
		}
		forbidden := r == 0 || r <= 0x1f || r >= 0x7f && r <= 0x9f || r >= 0xd800 && r <= 0xf8ff || r >= 0xfff0
		structural := r == '/' || r == '.' // "/x/" + "/" is "//"; "/x/." is relative
		if structural {
			continue
		}
		err := ValidatePath("/x/"+string(r), false)
		if (err != nil) != forbidden {
			t.Errorf("U+%04X: error %v, forbidden=%v", r, err, forbidden)
		}
	}
}

func TestSequentialSuffix(t *testing.T) {
	for n, want := range map[int32]string{
		0: "0000000000", 2: "0000000002", 1234567890: "1234567890", 2147483647: "2147483647",
		-2147483648: "-2147483648", -5: "-000000005",
	} {
		if got := SequentialSuffix(n); got != want {
			t.Errorf("SequentialSuffix(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestDigestID: the expected values were computed independently with
// python3 -c "import hashlib,base64;
// print(base64.b64encode(hashlib.sha1(b'user:pass').digest()).decode())",
// which is kazoo's make_digest_acl_credential('user', 'pass').
func TestDigestID(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{DigestID("user", "pass"), "user:smGaoVKd/cQkjm7b88GyorAUz20="},
		{DigestID("super", "secret"), "super:lK75jTNcA+U9vtVEw5vB51mj/w4="},
		{DigestAuthID("user:pass"), "user:smGaoVKd/cQkjm7b88GyorAUz20="},
		// The password may contain ':'; the user is what precedes the first.
		{DigestAuthID("a:b:c"), "a:cLzgnoJ6mP5qz3w+mwvPE2vDgu0="},
		{DigestID("a", "b:c"), "a:cLzgnoJ6mP5qz3w+mwvPE2vDgu0="},
		// No colon: generateDigest digests the whole string as the user.
		{DigestAuthID("nocolon"), "nocolon:Ra+cHr2ZoHvBjtNArFGNGlVie4g="},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
