package apns

import (
	"encoding/json"
	"errors"
)

// Payload verdicts.
var (
	errNotJSON   = errors.New("payload is not JSON")
	errNotObject = errors.New("payload is not a JSON object")
	errNoAPS     = errors.New("payload has no aps dictionary")
)

// checkPayload reports whether b is a JSON object whose "aps" member is an
// object. It validates with encoding/json and then walks only the top level
// by hand, so that the fake stays allocation-free at benchmark rates.
func checkPayload(b []byte, needAPS bool) error {
	if !json.Valid(b) {
		return errNotJSON
	}
	i := skipWS(b, 0)
	if b[i] != '{' {
		return errNotObject
	}
	if !needAPS {
		return nil
	}
	aps := false
	i = skipWS(b, i+1)
	if b[i] == '}' {
		return errNoAPS
	}
	for {
		// b is valid JSON, so a member key starts here.
		end := skipString(b, i)
		key := b[i+1 : end-1]
		i = skipWS(b, end)
		i = skipWS(b, i+1) // the colon
		isAPS := keyIs(key, "aps")
		if isAPS {
			// The last duplicate wins, as encoding/json decides.
			aps = b[i] == '{'
		}
		i = skipWS(b, skipValue(b, i))
		if b[i] == '}' {
			break
		}
		i = skipWS(b, i+1) // the comma
	}
	if !aps {
		return errNoAPS
	}
	return nil
}

// keyIs compares a raw (still escaped) JSON key with a plain ASCII name;
// escaped keys are rare, so only they pay for unquoting.
func keyIs(raw []byte, name string) bool {
	for _, c := range raw {
		if c == '\\' {
			var s string
			q := make([]byte, 0, len(raw)+2)
			q = append(append(append(q, '"'), raw...), '"')
			if json.Unmarshal(q, &s) != nil {
				return false
			}
			return s == name
		}
	}
	return string(raw) == name
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index after the string starting at b[i] == '"'.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return i
}

// skipValue returns the index after the (valid) value starting at b[i].
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}
