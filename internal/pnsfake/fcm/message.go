package fcm

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Limits the fake enforces (see the package comment).
const (
	// MaxMessage bounds the message object without white space and
	// without its token member.
	MaxMessage = 4096
	// MaxTopicData bounds the data map of a topic message, keys and
	// values together.
	MaxTopicData = 2048
	// maxTTLSeconds is android.ttl's upper bound: four weeks.
	maxTTLSeconds = 2419200
	// maxBody bounds what the fake reads of a request.
	maxBody = 256 << 10
)

// msgInfo is what checking a send request's body learned.
type msgInfo struct {
	token, topic, condition string
	targets                 int
	validateOnly            bool
	start, end              int // the message object within the body
	tokenLen                int // bytes of the token member: name, colon, value, comma
	dataSize                int // keys and values of message.data
}

// checker validates a send request body. The body is first checked with
// json.Valid, so the walker below can assume well-formed JSON and need not
// allocate: it only looks at member names and value kinds.
type checker struct {
	w walker
	m msgInfo
}

// check validates body as a messages:send request.
func (c *checker) check(body []byte) *apiErr {
	if !json.Valid(body) {
		return invalidArg("Invalid JSON payload received. The body is not valid JSON.", "")
	}
	if !utf8.Valid(body) {
		// encoding/json lets invalid UTF-8 through inside strings;
		// Google's parser does not.
		return invalidArg("Invalid JSON payload received. Invalid UTF-8 in a string.", "")
	}
	c.w = walker{b: body}
	w := &c.w
	w.ws()
	if w.peek() != '{' {
		return invalidArg("Invalid JSON payload received. Expected an object at the top level.", "")
	}
	hasMsg := false
	if e := w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "message":
			switch w.peek() {
			case 'n':
				w.skip()
				return nil
			case '{':
			default:
				return invalidValue(w, "message", "TYPE_MESSAGE")
			}
			hasMsg = true
			c.m.start = w.i
			e := c.message()
			c.m.end = w.i
			return e
		case "validate_only", "validateOnly":
			switch w.peek() {
			case 't':
				c.m.validateOnly = true
			case 'f', 'n':
			default:
				return invalidValue(w, "validate_only", "TYPE_BOOL")
			}
			w.skip()
			return nil
		}
		return unknownName(k, "")
	}); e != nil {
		return e
	}
	if !hasMsg {
		return invalidArg("Request contains an invalid argument: message is required.", "message")
	}
	if c.m.targets != 1 {
		return invalidArg("Exactly one of message.token, message.topic and message.condition must be set.", "message")
	}
	if size := compactLen(body[c.m.start:c.m.end]) - c.m.tokenLen; size > MaxMessage {
		e := invalidArg(fmt.Sprintf("Message is too big: %d bytes without the token; FCM accepts %d.", size, MaxMessage), "message")
		e.fcmCode = "INVALID_ARGUMENT"
		return e
	}
	if c.m.topic != "" && c.m.dataSize > MaxTopicData {
		e := invalidArg(fmt.Sprintf("Message is too big: topic messages carry at most %d bytes of data; this has %d.", MaxTopicData, c.m.dataSize), "message.data")
		e.fcmCode = "INVALID_ARGUMENT"
		return e
	}
	if c.m.topic != "" && !validTopic(c.m.topic) {
		return invalidArg("Invalid topic name: "+c.m.topic, "message.topic")
	}
	if c.m.condition != "" && strings.Count(c.m.condition, " in topics") > 5 {
		return invalidArg("Invalid condition: at most 5 topics are allowed.", "message.condition")
	}
	return nil
}

func (c *checker) message() *apiErr {
	w := &c.w
	return w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "name":
			return wantString(w, "message", k)
		case "token":
			return c.target(k, &c.m.token, "message.token", true)
		case "topic":
			return c.target(k, &c.m.topic, "message.topic", false)
		case "condition":
			return c.target(k, &c.m.condition, "message.condition", false)
		case "data":
			return dataMap(w, "message.data", &c.m.dataSize)
		case "notification":
			return object(w, "message.notification", func() *apiErr { return notification(w) })
		case "android":
			return object(w, "message.android", func() *apiErr { return android(w) })
		case "webpush":
			return object(w, "message.webpush", func() *apiErr { return webpush(w) })
		case "apns":
			return object(w, "message.apns", func() *apiErr { return apns(w) })
		case "fcm_options", "fcmOptions":
			return object(w, "message.fcm_options", func() *apiErr { return fcmOptions(w, "message.fcm_options") })
		}
		return unknownName(k, "message")
	})
}

// target reads token, topic or condition.
func (c *checker) target(k []byte, dst *string, field string, isToken bool) *apiErr {
	w := &c.w
	switch w.peek() {
	case 'n':
		w.skip()
		return nil
	case '"':
	default:
		return invalidValue(w, field, "TYPE_STRING")
	}
	raw := w.str()
	*dst = unquote(raw)
	if *dst == "" {
		return nil // an empty string is an unset field in proto JSON
	}
	c.m.targets++
	if isToken {
		c.m.tokenLen = len(k) + 3 + len(raw) + 2 + 1
	}
	return nil
}

func notification(w *walker) *apiErr {
	return w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "title", "body", "image":
			return wantString(w, "message.notification", k)
		}
		return unknownName(k, "message.notification")
	})
}

func android(w *walker) *apiErr {
	return w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "collapse_key", "collapseKey", "restricted_package_name", "restrictedPackageName":
			return wantString(w, "message.android", k)
		case "priority":
			if w.peek() == 'n' {
				w.skip()
				return nil
			}
			if w.peek() == '"' {
				if v := w.str(); string(v) == "NORMAL" || string(v) == "HIGH" {
					return nil
				}
			}
			return invalidArg("Invalid value at 'message.android.priority' (type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority): want \"NORMAL\" or \"HIGH\".", "message.android.priority")
		case "ttl":
			if w.peek() == 'n' {
				w.skip()
				return nil
			}
			if w.peek() == '"' {
				if secs, ok := parseDuration(w.str()); ok {
					if secs > maxTTLSeconds {
						return invalidArg(fmt.Sprintf("Invalid TTL: at most %d seconds (four weeks).", maxTTLSeconds), "message.android.ttl")
					}
					return nil
				}
			}
			return invalidArg("Invalid value at 'message.android.ttl' (type.googleapis.com/google.protobuf.Duration): want seconds with an 's' suffix, such as \"3.5s\".", "message.android.ttl")
		case "data":
			return dataMap(w, "message.android.data", nil)
		case "notification":
			return opaqueObject(w, "message.android.notification")
		case "fcm_options", "fcmOptions":
			return object(w, "message.android.fcm_options", func() *apiErr { return fcmOptions(w, "message.android.fcm_options") })
		case "direct_boot_ok", "directBootOk", "bandwidth_constrained_ok", "bandwidthConstrainedOk", "restricted_satellite_ok", "restrictedSatelliteOk":
			return wantBool(w, "message.android", k)
		}
		return unknownName(k, "message.android")
	})
}

func webpush(w *walker) *apiErr {
	return w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "headers":
			return stringMap(w, "message.webpush.headers")
		case "data":
			return dataMap(w, "message.webpush.data", nil)
		case "notification":
			return opaqueObject(w, "message.webpush.notification")
		case "fcm_options", "fcmOptions":
			return opaqueObject(w, "message.webpush.fcm_options")
		}
		return unknownName(k, "message.webpush")
	})
}

func apns(w *walker) *apiErr {
	return w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "headers":
			return stringMap(w, "message.apns.headers")
		case "payload":
			return opaqueObject(w, "message.apns.payload")
		case "fcm_options", "fcmOptions":
			return opaqueObject(w, "message.apns.fcm_options")
		case "live_activity_token", "liveActivityToken":
			return wantString(w, "message.apns", k)
		}
		return unknownName(k, "message.apns")
	})
}

func fcmOptions(w *walker, at string) *apiErr {
	return w.members(func(k []byte) *apiErr {
		switch string(unescapeKey(k)) {
		case "analytics_label", "analyticsLabel":
			return wantString(w, at, k)
		}
		return unknownName(k, at)
	})
}

// dataMap checks a map<string, string> of message data; size, if not nil,
// adds up its keys and values.
func dataMap(w *walker, field string, size *int) *apiErr {
	if w.peek() == 'n' {
		w.skip()
		return nil
	}
	if w.peek() != '{' {
		return invalidValue(w, field, "TYPE_MESSAGE")
	}
	i := 0
	return w.members(func(k []byte) *apiErr {
		if w.peek() != '"' {
			return invalidValue(w, fmt.Sprintf("%s[%d].value", field, i), "TYPE_STRING")
		}
		key := unescapeKey(k)
		if s := string(key); s == "from" || s == "gcm" || strings.HasPrefix(s, "google") {
			return invalidArg(fmt.Sprintf("Invalid data payload key %q: the key is reserved by FCM.", key), fmt.Sprintf("%s[%d].key", field, i))
		}
		v := w.str()
		if size != nil {
			*size += len(k) + len(v)
		}
		i++
		return nil
	})
}

// stringMap checks a map<string, string> such as headers.
func stringMap(w *walker, field string) *apiErr {
	if w.peek() == 'n' {
		w.skip()
		return nil
	}
	if w.peek() != '{' {
		return invalidValue(w, field, "TYPE_MESSAGE")
	}
	i := 0
	return w.members(func(k []byte) *apiErr {
		if w.peek() != '"' {
			return invalidValue(w, fmt.Sprintf("%s[%d].value", field, i), "TYPE_STRING")
		}
		w.str()
		i++
		return nil
	})
}

// object runs fn on an object value; null is an unset field.
func object(w *walker, field string, fn func() *apiErr) *apiErr {
	switch w.peek() {
	case 'n':
		w.skip()
		return nil
	case '{':
		return fn()
	}
	return invalidValue(w, field, "TYPE_MESSAGE")
}

// opaqueObject accepts any object (a google.protobuf.Struct, or a message
// the fake does not look into).
func opaqueObject(w *walker, field string) *apiErr {
	switch w.peek() {
	case 'n', '{':
		w.skip()
		return nil
	}
	return invalidValue(w, field, "TYPE_MESSAGE")
}

// wantString checks that member k of the object at is a string. The field
// name is only built for the error, keeping the accepted path free of
// allocations.
func wantString(w *walker, at string, k []byte) *apiErr {
	switch w.peek() {
	case '"', 'n':
		w.skip()
		return nil
	}
	return invalidValue(w, at+"."+string(unescapeKey(k)), "TYPE_STRING")
}

func wantBool(w *walker, at string, k []byte) *apiErr {
	switch w.peek() {
	case 't', 'f', 'n':
		w.skip()
		return nil
	}
	return invalidValue(w, at+"."+string(unescapeKey(k)), "TYPE_BOOL")
}

func invalidValue(w *walker, field, typ string) *apiErr {
	start := w.i
	w.skip()
	v := w.b[start:w.i]
	if len(v) > 40 {
		v = append(v[:37:37], "..."...)
	}
	return invalidArg(fmt.Sprintf("Invalid value at '%s' (%s), %s", field, typ, v), field)
}

func unknownName(k []byte, at string) *apiErr {
	if at == "" {
		return invalidArg(fmt.Sprintf("Invalid JSON payload received. Unknown name %q: Cannot find field.", unescapeKey(k)), "")
	}
	return invalidArg(fmt.Sprintf("Invalid JSON payload received. Unknown name %q at '%s': Cannot find field.", unescapeKey(k), at), at)
}

// parseDuration reads a google.protobuf.Duration in JSON ("3.5s") as whole
// seconds.
func parseDuration(v []byte) (int64, bool) {
	n := len(v)
	if n < 2 || v[n-1] != 's' {
		return 0, false
	}
	whole, frac, hasFrac := strings.Cut(string(v[:n-1]), ".")
	if whole == "" || (hasFrac && (frac == "" || len(frac) > 9)) {
		return 0, false
	}
	for _, part := range []string{whole, frac} {
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return 0, false
			}
		}
	}
	secs, err := strconv.ParseInt(whole, 10, 64)
	return secs, err == nil
}

// validToken is the fake's plausibility rule for registration tokens.
func validToken(t string) bool {
	if len(t) < 64 || len(t) > 4096 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == ':') {
			return false
		}
	}
	return true
}

// validTopic follows FCM's topic name pattern [a-zA-Z0-9-_.~%]+, with an
// optional /topics/ prefix.
func validTopic(t string) bool {
	t = strings.TrimPrefix(t, "/topics/")
	if t == "" || len(t) > 900 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.~%", c) >= 0) {
			return false
		}
	}
	return true
}

// compactLen is the length of JSON b without white space outside strings.
func compactLen(b []byte) int {
	n, in, esc := 0, false, false
	for _, c := range b {
		switch {
		case in:
			n++
			switch {
			case esc:
				esc = false
			case c == '\\':
				esc = true
			case c == '"':
				in = false
			}
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		default:
			n++
			if c == '"' {
				in = true
			}
		}
	}
	return n
}

// unescapeKey decodes a member name that has escapes; others are returned
// as they are.
func unescapeKey(k []byte) []byte {
	for _, c := range k {
		if c == '\\' {
			return []byte(unquote(k))
		}
	}
	return k
}

// unquote decodes the contents of a JSON string.
func unquote(raw []byte) string {
	for _, c := range raw {
		if c == '\\' {
			var s string
			q := make([]byte, 0, len(raw)+2)
			q = append(append(append(q, '"'), raw...), '"')
			if json.Unmarshal(q, &s) != nil {
				return string(raw)
			}
			return s
		}
	}
	return string(raw)
}

// walker moves over JSON already known to be valid.
type walker struct {
	b []byte
	i int
}

func (w *walker) ws() {
	for w.i < len(w.b) {
		switch w.b[w.i] {
		case ' ', '\t', '\r', '\n':
			w.i++
		default:
			return
		}
	}
}

func (w *walker) peek() byte {
	w.ws()
	if w.i < len(w.b) {
		return w.b[w.i]
	}
	return 0
}

// str moves past a string and returns its contents, escapes intact.
func (w *walker) str() []byte {
	w.ws()
	w.i++
	start := w.i
	for w.b[w.i] != '"' {
		if w.b[w.i] == '\\' {
			w.i++
		}
		w.i++
	}
	s := w.b[start:w.i]
	w.i++
	return s
}

// skip moves past any value.
func (w *walker) skip() {
	switch w.peek() {
	case '"':
		w.str()
	case '{', '[':
		depth := 0
		for {
			switch w.b[w.i] {
			case '"':
				w.str()
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					w.i++
					return
				}
			}
			w.i++
		}
	default:
		for w.i < len(w.b) {
			switch w.b[w.i] {
			case ',', '}', ']', ' ', '\t', '\r', '\n':
				return
			}
			w.i++
		}
	}
}

// members calls fn for each member of the object at the cursor, with the
// cursor on the member's value; fn must move past the value.
func (w *walker) members(fn func(key []byte) *apiErr) *apiErr {
	w.ws()
	w.i++ // '{'
	if w.peek() == '}' {
		w.i++
		return nil
	}
	for {
		k := w.str()
		w.ws()
		w.i++ // ':'
		w.ws()
		if e := fn(k); e != nil {
			return e
		}
		if w.peek() == ',' {
			w.i++
			w.ws()
			continue
		}
		w.i++ // '}'
		return nil
	}
}
