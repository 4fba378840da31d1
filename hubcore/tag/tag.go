// Package tag defines what a push tag is: its syntax, the system tags the hub
// derives from installations, and the case-insensitive identity under which
// tags are indexed and compared.
//
// Tags compare case-insensitively (ASCII folding: the tag alphabet is ASCII)
// and keep the case they were written in when echoed back. Notification Hubs
// does not document its rule; its .NET SDK keeps tags in a case-insensitive
// set, so folding is the choice that never surprises a client written for it.
package tag

import (
	"fmt"
	"sort"
	"strings"
)

// MaxLen is the longest user tag, in bytes, as in Notification Hubs.
const MaxLen = 120

// MaxSystemValueLen bounds the value inside the braces of a system tag.
const MaxSystemValueLen = 256

// System tag prefixes. The braces are part of the syntax.
const (
	InstallationIDPrefix = "$InstallationId:{"
	UserIDPrefix         = "$UserId:{"
)

// SyntaxError says why a string is not a tag. Offset is the byte offset of
// the first offending character, or -1 when the whole string is at fault.
type SyntaxError struct {
	Tag    string
	Offset int
	Reason string
}

func (e *SyntaxError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("invalid tag %q: %s at offset %d", e.Tag, e.Reason, e.Offset)
	}
	return fmt.Sprintf("invalid tag %q: %s", e.Tag, e.Reason)
}

// IsTagChar reports whether c may appear in a user tag.
func IsTagChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '_' || c == '@' || c == '#' || c == '.' || c == ':' || c == '-'
}

// IsSystemValueChar reports whether c may appear inside the braces of a
// system tag (the user tag alphabet plus '=').
func IsSystemValueChar(c byte) bool { return IsTagChar(c) || c == '=' }

// Validate checks the syntax of a user or system tag.
func Validate(s string) error {
	if s == "" {
		return &SyntaxError{Tag: s, Offset: -1, Reason: "empty tag"}
	}
	if s[0] == '$' {
		_, _, err := ParseSystem(s)
		return err
	}
	if len(s) > MaxLen {
		return &SyntaxError{Tag: s, Offset: -1, Reason: fmt.Sprintf("longer than %d characters", MaxLen)}
	}
	for i := 0; i < len(s); i++ {
		if !IsTagChar(s[i]) {
			return &SyntaxError{Tag: s, Offset: i, Reason: fmt.Sprintf("character %q not allowed (letters, digits and _ @ # . : - only)", s[i])}
		}
	}
	return nil
}

// SystemKind names the two families of system tags.
type SystemKind int

// The system tag kinds. NotSystem is returned for user tags.
const (
	NotSystem SystemKind = iota
	InstallationID
	UserID
)

// ParseSystem splits a system tag into its kind and value. The prefix is
// matched case-insensitively, as the .NET SDK's validator does.
func ParseSystem(s string) (SystemKind, string, error) {
	var kind SystemKind
	var rest string
	switch {
	case hasPrefixFold(s, InstallationIDPrefix):
		kind, rest = InstallationID, s[len(InstallationIDPrefix):]
	case hasPrefixFold(s, UserIDPrefix):
		kind, rest = UserID, s[len(UserIDPrefix):]
	default:
		return NotSystem, "", &SyntaxError{Tag: s, Offset: 0, Reason: "'$' starts only the system tags $InstallationId:{…} and $UserId:{…}"}
	}
	base := len(s) - len(rest)
	end := strings.IndexByte(rest, '}')
	if end < 0 {
		return NotSystem, "", &SyntaxError{Tag: s, Offset: len(s), Reason: "missing closing '}'"}
	}
	if end != len(rest)-1 {
		return NotSystem, "", &SyntaxError{Tag: s, Offset: base + end + 1, Reason: "characters after closing '}'"}
	}
	v := rest[:end]
	if v == "" {
		return NotSystem, "", &SyntaxError{Tag: s, Offset: base, Reason: "empty value inside braces"}
	}
	if len(v) > MaxSystemValueLen {
		return NotSystem, "", &SyntaxError{Tag: s, Offset: -1, Reason: fmt.Sprintf("value longer than %d characters", MaxSystemValueLen)}
	}
	for i := 0; i < len(v); i++ {
		if !IsSystemValueChar(v[i]) {
			return NotSystem, "", &SyntaxError{Tag: s, Offset: base + i, Reason: fmt.Sprintf("character %q not allowed inside braces", v[i])}
		}
	}
	return kind, v, nil
}

// IsSystem reports whether s is in the reserved '$' namespace. Devices and
// backends may name system tags in expressions but never write them.
func IsSystem(s string) bool { return s != "" && s[0] == '$' }

// ForInstallation returns the implicit tag of an installation id.
func ForInstallation(id string) string { return InstallationIDPrefix + id + "}" }

// ForUser returns the implicit tag of a user id.
func ForUser(userID string) string { return UserIDPrefix + userID + "}" }

// Fold returns the identity of a tag: its ASCII lower-case form. It does not
// allocate when s is already folded.
func Fold(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return fold(s, i)
		}
	}
	return s
}

func fold(s string, from int) string {
	b := []byte(s)
	for i := from; i < len(b); i++ {
		if c := b[i]; 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// Equal reports whether two tags are the same tag.
func Equal(a, b string) bool { return strings.EqualFold(a, b) }

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Set is an immutable set of tags held in folded form. The zero value is the
// empty set. It is built once per record and then only probed, so it is a
// sorted slice: compact, cache-friendly, and fast for the tens of tags a
// device carries.
type Set struct {
	folded []string
}

// NewSet folds and de-duplicates tags.
func NewSet(tags ...string) Set {
	if len(tags) == 0 {
		return Set{}
	}
	f := make([]string, len(tags))
	for i, t := range tags {
		f[i] = Fold(t)
	}
	sort.Strings(f)
	out := f[:1]
	for _, t := range f[1:] {
		if t != out[len(out)-1] {
			out = append(out, t)
		}
	}
	return Set{folded: out}
}

// Has reports whether the set holds the tag whose folded form is folded.
// Callers fold once (expressions are folded at parse time), never per probe.
// The receiver is a pointer so that passing a *Set as an interface does not
// allocate; a Set value does not satisfy tagexpr.Membership by design.
func (s *Set) Has(folded string) bool {
	f := s.folded
	if len(f) <= 16 {
		for _, t := range f {
			if t == folded {
				return true
			}
		}
		return false
	}
	i := sort.SearchStrings(f, folded)
	return i < len(f) && f[i] == folded
}

// Len is the number of distinct tags.
func (s Set) Len() int { return len(s.folded) }

// Folded returns the folded tags in ascending order. The slice is shared;
// callers must not modify it.
func (s Set) Folded() []string { return s.folded }
