package fcm

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// spliceToken returns the request body for one device: the Notification
// Hubs fcmv1 payload {"message":{...}} with "token":"<handle>" inserted as
// the message's first member. It scans the payload once instead of decoding
// and re-encoding it, and refuses a payload that is not a message wrapper
// or that already names a target (token, topic or condition): sending it
// would reach that target once per device instead of the device.
func spliceToken(body []byte, handle string) ([]byte, error) {
	if handle == "" {
		return nil, errors.New("the delivery has no FCM registration token")
	}
	open, empty, err := findMessage(body)
	if err != nil {
		return nil, err
	}
	tok, err := quoteToken(handle)
	if err != nil {
		return nil, err
	}
	n := len(body) + len(`"token":`) + len(tok) + 1
	out := make([]byte, 0, n)
	out = append(out, body[:open+1]...)
	out = append(out, `"token":`...)
	out = append(out, tok...)
	if !empty {
		out = append(out, ',')
	}
	out = append(out, body[open+1:]...)
	return out, nil
}

// quoteToken writes handle as a JSON string. Registration tokens are
// base64url with a colon; anything needing escapes takes the slow path.
func quoteToken(handle string) ([]byte, error) {
	plain := true
	for i := 0; i < len(handle); i++ {
		if c := handle[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			plain = false
			break
		}
	}
	if !plain {
		if !utf8.ValidString(handle) {
			return nil, errors.New("the FCM registration token is not valid UTF-8")
		}
		return json.Marshal(handle)
	}
	b := make([]byte, 0, len(handle)+2)
	b = append(b, '"')
	b = append(b, handle...)
	return append(b, '"'), nil
}

// findMessage locates the opening brace of the "message" object of
// {"message":{...}} and reports whether that object is empty. The scan
// follows JSON's grammar closely enough to find member boundaries; it does
// not validate scalars, which the hub's payload check already did.
func findMessage(b []byte) (open int, empty bool, err error) {
	sc := scanner{b: b}
	sc.ws()
	if !sc.eat('{') {
		return 0, false, errors.New(`the fcmv1 payload must be a JSON object {"message":{...}}`)
	}
	open = -1
	first := true
	for {
		sc.ws()
		if sc.eat('}') {
			break
		}
		if !first && !sc.eat(',') {
			return 0, false, sc.errorf("expected ',' or '}'")
		}
		first = false
		sc.ws()
		key, err := sc.key()
		if err != nil {
			return 0, false, err
		}
		sc.ws()
		if string(key) != "message" {
			return 0, false, fmt.Errorf(`the fcmv1 payload has a top-level member %q; it must be {"message":{...}}`, key)
		}
		if open >= 0 {
			return 0, false, errors.New(`the fcmv1 payload has two "message" members`)
		}
		if sc.peek() != '{' {
			return 0, false, errors.New(`the fcmv1 payload's "message" is not an object`)
		}
		open = sc.i
		if empty, err = checkMessageMembers(&sc); err != nil {
			return 0, false, err
		}
	}
	sc.ws()
	if sc.i != len(b) {
		return 0, false, sc.errorf("trailing data after the payload")
	}
	if open < 0 {
		return 0, false, errors.New(`the fcmv1 payload has no "message" member; it must be {"message":{...}}`)
	}
	return open, empty, nil
}

// checkMessageMembers walks the message object at sc.i, refusing target
// members, and leaves sc after it.
func checkMessageMembers(sc *scanner) (empty bool, err error) {
	sc.i++ // '{'
	sc.ws()
	if sc.eat('}') {
		return true, nil
	}
	for {
		sc.ws()
		key, err := sc.key()
		if err != nil {
			return false, err
		}
		switch string(key) {
		case "token", "topic", "condition":
			return false, fmt.Errorf("the fcmv1 payload sets message.%s; the hub sets the target itself", key)
		}
		sc.ws()
		if err := sc.skipValue(); err != nil {
			return false, err
		}
		sc.ws()
		if sc.eat('}') {
			return false, nil
		}
		if !sc.eat(',') {
			return false, sc.errorf("expected ',' or '}' in the message object")
		}
	}
}

// scanner is a cursor over a JSON document.
type scanner struct {
	b []byte
	i int
}

func (s *scanner) errorf(format string, args ...any) error {
	return fmt.Errorf("the fcmv1 payload is not valid JSON at offset %d: %s", s.i, fmt.Sprintf(format, args...))
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\r', '\n':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// key reads a member name and its colon. Names with escapes are decoded,
// so that "\u0074oken" is still recognised as token; the others are
// returned in place, without copying.
func (s *scanner) key() ([]byte, error) {
	start := s.i
	escaped, err := s.skipString()
	if err != nil {
		return nil, err
	}
	raw := s.b[start:s.i]
	s.ws()
	if !s.eat(':') {
		return nil, s.errorf("expected ':' after a member name")
	}
	if !escaped {
		return raw[1 : len(raw)-1], nil
	}
	var k string
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, s.errorf("bad member name: %v", err)
	}
	return []byte(k), nil
}

// skipString moves past the string at s.i and reports whether it had
// escapes.
func (s *scanner) skipString() (escaped bool, err error) {
	if !s.eat('"') {
		return false, s.errorf("expected a string")
	}
	for s.i < len(s.b) {
		c := s.b[s.i]
		s.i++
		switch {
		case c == '"':
			return escaped, nil
		case c == '\\':
			escaped = true
			s.i++ // the escaped byte; \uXXXX's digits are plain bytes
		case c < 0x20:
			return false, s.errorf("control character in a string")
		}
	}
	return false, s.errorf("unterminated string")
}

// skipValue moves past one value of any kind.
func (s *scanner) skipValue() error {
	switch c := s.peek(); c {
	case '"':
		_, err := s.skipString()
		return err
	case '{', '[':
		return s.skipComposite()
	case 0:
		return s.errorf("expected a value")
	default:
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				if s.i == start {
					return s.errorf("expected a value")
				}
				return nil
			case '{', '[', '"', ':':
				return s.errorf("unexpected %q", s.b[s.i])
			}
			s.i++
		}
		return nil
	}
}

// skipComposite moves past an object or array, tracking nesting with a
// small stack so that mismatched brackets are caught.
func (s *scanner) skipComposite() error {
	var stack [32]byte
	nest := stack[:0]
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch c {
		case '"':
			if _, err := s.skipString(); err != nil {
				return err
			}
			continue
		case '{', '[':
			nest = append(nest, c)
		case '}', ']':
			if len(nest) == 0 || (c == '}') != (nest[len(nest)-1] == '{') {
				return s.errorf("mismatched %q", c)
			}
			nest = nest[:len(nest)-1]
			if len(nest) == 0 {
				s.i++
				return nil
			}
		}
		s.i++
	}
	return s.errorf("unterminated object or array")
}
