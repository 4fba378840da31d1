package hubcore

import (
	"bytes"
	"crypto/ecdh"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/pushgate/pushgate/hubcore/tag"
	"github.com/pushgate/pushgate/hubcore/template"
)

// Limits bounds what one installation or registration may hold. The zero
// value of a field means its default.
type Limits struct {
	// MaxTags bounds the tags of an installation, of a registration and of
	// each template (default 60, as in Notification Hubs).
	MaxTags int
	// MaxTemplates bounds the templates of an installation (default 32;
	// Notification Hubs documents no number).
	MaxTemplates int
	// MaxPushVariables bounds an entry's push variables (default 64).
	MaxPushVariables int
	// MaxHeaders bounds the headers of a template (default 16).
	MaxHeaders int
	// TTL, when positive, caps every entry's lifetime: a write sets the
	// expiration to now+TTL unless the client asked for an earlier one
	// (Notification Hubs' RegistrationTtl). Zero means entries never expire.
	TTL time.Duration
}

// Fixed bounds that are part of the model rather than of a deployment.
const (
	MaxInstallationIDLen = 128 // GUIDs are 36; Notification Hubs documents none
	MaxUserIDLen         = tag.MaxSystemValueLen
	MaxTemplateNameLen   = 200  // the .NET SDK's client-side check
	MaxPushVariableName  = 120  // as template property names
	MaxPushVariableValue = 4096 // a variable is rendered into a ≤5 KB payload
	MaxHeaderValueLen    = 1024
	MaxHandleLen         = 4096
	MaxURLLen            = 2048
)

// DefaultLimits returns the limits used when none are configured.
func DefaultLimits() Limits { return Limits{}.withDefaults() }

func (l Limits) withDefaults() Limits {
	if l.MaxTags <= 0 {
		l.MaxTags = 60
	}
	if l.MaxTemplates <= 0 {
		l.MaxTemplates = 32
	}
	if l.MaxPushVariables <= 0 {
		l.MaxPushVariables = 64
	}
	if l.MaxHeaders <= 0 {
		l.MaxHeaders = 16
	}
	return l
}

// Validate checks every rule of the model and puts the installation in
// canonical form: duplicate tags (case-insensitively) are dropped keeping the
// first spelling, and templates are compiled so that sends never re-parse
// them. It reports the first broken rule as an *Error naming the field.
func (in *Installation) Validate(lim Limits) error {
	lim = lim.withDefaults()
	if err := ValidateInstallationID(in.InstallationID); err != nil {
		return err
	}
	if in.Platform == "" {
		return invalid("platform", "platform is required")
	}
	if _, err := ParsePlatform(string(in.Platform)); err != nil {
		return err
	}
	if err := validateChannel("pushChannel", in.Platform, in.PushChannel); err != nil {
		return err
	}
	if in.UserID != "" {
		if err := ValidateUserID(in.UserID); err != nil {
			return err
		}
	}
	var err error
	if in.Tags, err = canonicalTags("tags", in.Tags, lim.MaxTags); err != nil {
		return err
	}
	if err := validatePushVariables(in.PushVariables, lim); err != nil {
		return err
	}
	if len(in.Templates) > lim.MaxTemplates {
		return limit("templates", "%d templates; at most %d are allowed", len(in.Templates), lim.MaxTemplates)
	}
	for _, name := range sortedKeys(in.Templates) {
		field := "templates." + name
		if err := ValidateTemplateName(field, name); err != nil {
			return err
		}
		t := in.Templates[name]
		if t == nil {
			return invalid(field, "template is null")
		}
		if t.Priority != "" {
			return invalid(field+".priority", "installation templates set the APNs priority with an apns-priority header")
		}
		if err := t.compile(field, in.Platform, lim); err != nil {
			return err
		}
	}
	return nil
}

// ValidateInstallationID checks an installation id: 1 to 128 letters,
// digits, '.', '-' or '_' (what the service accepts in a URL segment).
func ValidateInstallationID(id string) error { return validateID("installationId", id) }

// ValidateRegistrationID checks a registration id chosen by a client. The
// alphabet excludes '~', which marks the registrations projected from
// installations, so a client can never claim one of their ids.
func ValidateRegistrationID(id string) error { return validateID("RegistrationId", id) }

func validateID(field, id string) error {
	if id == "" {
		return invalid(field, "%s is required", field)
	}
	if len(id) > MaxInstallationIDLen {
		return limit(field, "longer than %d characters", MaxInstallationIDLen)
	}
	if id == "." || id == ".." {
		// A dot segment: URL resolution (RFC 3986 §5.2.4) in client
		// libraries and proxies removes it, even percent-encoded, so an
		// entry with this id could never be read or deleted by its URL.
		return invalid(field, "%q is a URL dot segment, not an id", id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isIDChar(c) {
			return invalid(field, "character %q at offset %d not allowed (letters, digits, '.', '-' and '_' only)", c, i)
		}
	}
	return nil
}

func isIDChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_'
}

// ValidateUserID checks a user id: the characters allowed inside the braces
// of its $UserId:{…} tag.
func ValidateUserID(uid string) error {
	if len(uid) > MaxUserIDLen {
		return limit("userId", "longer than %d characters", MaxUserIDLen)
	}
	for i := 0; i < len(uid); i++ {
		if !tag.IsSystemValueChar(uid[i]) {
			return invalid("userId", "character %q at offset %d not allowed (letters, digits and - _ @ # . : = only)", uid[i], i)
		}
	}
	return nil
}

// ValidateTemplateName checks a template name. Names are free text (the
// service accepts "Template Name"); only names that are also valid tags can
// be used as a tag expression to aim a send at one template.
func ValidateTemplateName(field, name string) error {
	if name == "" {
		return invalid(field, "template name is empty")
	}
	if len(name) > MaxTemplateNameLen {
		return limit(field, "template name longer than %d characters", MaxTemplateNameLen)
	}
	if name[0] == '$' {
		return invalid(field, "template names starting with '$' are reserved")
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return invalid(field, "template name contains the non-printable character %U", r)
		}
	}
	return nil
}

// canonicalTags validates user tags and drops case-insensitive duplicates.
func canonicalTags(field string, tags []string, max int) ([]string, error) {
	if len(tags) == 0 {
		return nil, nil
	}
	seen := make(map[string]struct{}, len(tags))
	out := tags[:0:0]
	for i, t := range tags {
		f := fmt.Sprintf("%s[%d]", field, i)
		if tag.IsSystem(t) {
			return nil, invalid(f, "tag %q: tags starting with '$' are reserved for the system", t)
		}
		if err := tag.Validate(t); err != nil {
			return nil, wrapInvalid(f, err)
		}
		k := tag.Fold(t)
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, t)
	}
	if len(out) > max {
		return nil, limit(field, "%d tags; at most %d are allowed", len(out), max)
	}
	return out, nil
}

func validatePushVariables(vars map[string]string, lim Limits) error {
	if len(vars) > lim.MaxPushVariables {
		return limit("pushVariables", "%d push variables; at most %d are allowed", len(vars), lim.MaxPushVariables)
	}
	for _, k := range sortedKeys(vars) {
		f := "pushVariables." + k
		if k == "" || len(k) > MaxPushVariableName {
			return invalid(f, "a push variable name has 1 to %d characters", MaxPushVariableName)
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; !(c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return invalid(f, "character %q not allowed in a push variable name (letters, digits and _ only)", c)
			}
		}
		if len(vars[k]) > MaxPushVariableValue {
			return limit(f, "value longer than %d bytes", MaxPushVariableValue)
		}
	}
	return nil
}

// validateChannel checks the handle's shape for its platform, so that a
// malformed handle is refused at registration rather than at delivery.
func validateChannel(field string, p Platform, c PushChannel) error {
	if p == Browser {
		if c.Handle != "" {
			return invalid(field, "a browser pushChannel is an object with endpoint, p256dh and auth")
		}
		if err := validateHTTPSURL(field+".endpoint", c.Endpoint); err != nil {
			return err
		}
		key, err := decodeB64URL(c.P256DH)
		if err != nil {
			return invalid(field+".p256dh", "not base64url: %v", err)
		}
		if _, err := ecdh.P256().NewPublicKey(key); err != nil {
			return invalid(field+".p256dh", "not an uncompressed P-256 public key (65 bytes starting 0x04 on the curve); got %d bytes", len(key))
		}
		auth, err := decodeB64URL(c.Auth)
		if err != nil {
			return invalid(field+".auth", "not base64url: %v", err)
		}
		if len(auth) != 16 {
			return invalid(field+".auth", "the auth secret is 16 bytes; got %d", len(auth))
		}
		return nil
	}
	if c.Endpoint != "" || c.P256DH != "" || c.Auth != "" {
		return invalid(field, "only browser installations have an object pushChannel; %s takes a string", p)
	}
	h := c.Handle
	if h == "" {
		return invalid(field, "pushChannel is required")
	}
	if len(h) > MaxHandleLen {
		return limit(field, "longer than %d characters", MaxHandleLen)
	}
	switch p {
	case APNS:
		// Device tokens are 32 bytes today; Apple warns that the length may
		// grow, so accept up to 100 bytes.
		if len(h)%2 != 0 || len(h) < 64 || len(h) > 200 {
			return invalid(field, "an APNs device token is 32 to 100 bytes written as hex (64 to 200 hex digits, even); got %d characters", len(h))
		}
		for i := 0; i < len(h); i++ {
			if !isHex(h[i]) {
				return invalid(field, "an APNs device token is hex; character %q at offset %d is not", h[i], i)
			}
		}
	case WNS:
		return validateHTTPSURL(field, h)
	default: // FCM v1, GCM, ADM, Baidu, Xiaomi: opaque tokens
		for i := 0; i < len(h); i++ {
			if c := h[i]; !(isIDChar(c) || c == ':' || c == '=' || c == '%') {
				return invalid(field, "character %q at offset %d not allowed in a %s token", c, i, p)
			}
		}
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func validateHTTPSURL(field, s string) error {
	if s == "" {
		return invalid(field, "a URL is required")
	}
	if len(s) > MaxURLLen {
		return limit(field, "URL longer than %d characters", MaxURLLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid(field, "not a URL: %v", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return invalid(field, "must be an absolute https URL")
	}
	if u.User != nil || u.Fragment != "" || strings.ContainsAny(s, " \t\r\n") {
		return invalid(field, "must not carry user info, a fragment or white space")
	}
	return nil
}

// decodeB64URL accepts the base64url that PushSubscription.toJSON writes and,
// leniently, standard base64, padded or not.
func decodeB64URL(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	s = strings.NewReplacer("+", "-", "/", "_").Replace(s)
	return base64.RawURLEncoding.DecodeString(s)
}

// CompiledTemplate is a template ready to render: its body and every
// templated scalar compiled once, when the template was stored.
type CompiledTemplate struct {
	Body     *template.Template
	Headers  []CompiledHeader
	Expiry   *template.Value // nil when absent
	Priority *template.Value // nil when absent
	// WNSType is the X-WNS-Type of a WNS template (wns/toast, …).
	WNSType string
}

// CompiledHeader is a header name with its compiled value.
type CompiledHeader struct {
	Name  string
	Value *template.Value
}

// Compiled returns the compiled form made by Validate, or nil before it.
func (t *Template) Compiled() *CompiledTemplate { return t.compiled }

var wnsTypes = map[string]bool{"wns/toast": true, "wns/tile": true, "wns/badge": true, "wns/raw": true}

var apnsPushTypes = map[string]bool{"alert": true, "background": true, "voip": true, "complication": true,
	"fileprovider": true, "mdm": true, "location": true, "liveactivity": true, "pushtotalk": true, "widgets": true, "controls": true}

func (t *Template) compile(field string, p Platform, lim Limits) error {
	if strings.TrimSpace(t.Body) == "" {
		return invalid(field+".body", "a template body is required")
	}
	var err error
	if t.Tags, err = canonicalTags(field+".tags", t.Tags, lim.MaxTags); err != nil {
		return err
	}
	if len(t.Headers) > lim.MaxHeaders {
		return limit(field+".headers", "%d headers; at most %d are allowed", len(t.Headers), lim.MaxHeaders)
	}
	key := t.cacheKey(p)
	if c := compileCacheShared.get(key); c != nil {
		t.compiled = c
		return nil
	}
	c, err := t.compileUncached(field, p)
	if err != nil {
		return err
	}
	compileCacheShared.put(key, c)
	t.compiled = c
	return nil
}

// compileUncached compiles the template's body and templated scalars and
// checks the per-platform rules on them.
func (t *Template) compileUncached(field string, p Platform) (*CompiledTemplate, error) {
	c := &CompiledTemplate{}
	if len(t.Headers) > 0 && p != APNS && p != WNS && p != Browser {
		return nil, unsupported(field+".headers", "%s templates take no headers (only apns, wns and browser do)", p)
	}
	for _, name := range sortedKeys(t.Headers) {
		hf := field + ".headers." + name
		v := t.Headers[name]
		if len(v) > MaxHeaderValueLen {
			return nil, limit(hf, "header value longer than %d bytes", MaxHeaderValueLen)
		}
		cv, err := template.CompileValue(v)
		if err != nil {
			return nil, wrapInvalid(hf, err)
		}
		lit, isLit := literalText(cv)
		if err := checkHeader(p, name, lit, isLit); err != nil {
			return nil, invalid(hf, "%v", err)
		}
		if p == WNS && strings.EqualFold(name, "X-WNS-Type") {
			if !isLit || !wnsTypes[strings.ToLower(lit)] {
				return nil, invalid(hf, "X-WNS-Type is one of wns/toast, wns/tile, wns/badge, wns/raw")
			}
			c.WNSType = strings.ToLower(lit)
		}
		c.Headers = append(c.Headers, CompiledHeader{Name: name, Value: cv})
	}
	kind := template.JSON
	if p == WNS {
		if c.WNSType == "" {
			// The SDKs derive the type from the root element; doing the same
			// here keeps hand-written templates working.
			root, err := xmlRoot(t.Body)
			if err != nil || !wnsTypes["wns/"+root] || root == "raw" {
				return nil, invalid(field+".headers", "a WNS template needs an X-WNS-Type header (wns/toast, wns/tile, wns/badge or wns/raw)")
			}
			c.WNSType = "wns/" + root
			cv, _ := template.CompileValue(c.WNSType)
			c.Headers = append(c.Headers, CompiledHeader{Name: "X-WNS-Type", Value: cv})
		}
		kind = template.XML
		if c.WNSType == "wns/raw" {
			kind = template.Raw
		}
	}
	var err error
	if c.Body, err = template.Compile(t.Body, kind); err != nil {
		return nil, wrapInvalid(field+".body", err)
	}
	if t.Expiry != "" {
		if p != APNS {
			return nil, unsupported(field+".expiry", "expiry applies to apns templates only")
		}
		if c.Expiry, err = template.CompileValue(t.Expiry); err != nil {
			return nil, wrapInvalid(field+".expiry", err)
		}
		if lit, ok := literalText(c.Expiry); ok && lit != "0" {
			if _, err := ParseTime(lit); err != nil {
				return nil, invalid(field+".expiry", "expiry is a W3C date, 0, or an expression: %v", err)
			}
		}
	}
	if t.Priority != "" {
		if p != APNS {
			return nil, unsupported(field+".priority", "priority applies to apns templates only")
		}
		if c.Priority, err = template.CompileValue(t.Priority); err != nil {
			return nil, wrapInvalid(field+".priority", err)
		}
		if lit, ok := literalText(c.Priority); ok && lit != "5" && lit != "10" && lit != "1" {
			return nil, invalid(field+".priority", "APNs priority is 1, 5 or 10")
		}
	}
	return c, nil
}

// literalText returns the text of a value that reads no property (a plain
// literal, or a constant expression such as {'a' + 'b'}).
func literalText(v *template.Value) (string, bool) {
	if !v.IsLiteral() {
		return "", false
	}
	s, err := v.String(template.PropMap(nil))
	return s, err == nil
}

// checkHeader enforces the per-platform header rules. The value rules apply
// to literal values (lit reports whether v is one); values computed from
// properties are checked when rendered.
func checkHeader(p Platform, name, v string, lit bool) error {
	ln := strings.ToLower(name)
	switch p {
	case APNS:
		if !strings.HasPrefix(ln, "apns-") {
			return fmt.Errorf("APNs header names start with apns-")
		}
		switch {
		case !lit:
		case ln == "apns-priority" && v != "5" && v != "10" && v != "1":
			return fmt.Errorf("apns-priority is 1, 5 or 10")
		case ln == "apns-expiration":
			if _, err := strconv.ParseInt(v, 10, 64); err != nil {
				return fmt.Errorf("apns-expiration is a UNIX time in seconds")
			}
		case ln == "apns-push-type" && !apnsPushTypes[v]:
			return fmt.Errorf("unknown apns-push-type %q", v)
		case ln == "apns-collapse-id" && len(v) > 64:
			return fmt.Errorf("apns-collapse-id is at most 64 bytes")
		}
	case WNS:
		if !strings.HasPrefix(ln, "x-wns-") {
			return fmt.Errorf("WNS header names start with X-WNS-")
		}
	case Browser:
		switch ln {
		case "ttl":
			if n, err := strconv.Atoi(v); lit && (err != nil || n < 0) {
				return fmt.Errorf("TTL is a number of seconds")
			}
		case "urgency":
			if lit && v != "very-low" && v != "low" && v != "normal" && v != "high" {
				return fmt.Errorf("the Urgency header is very-low, low, normal or high")
			}
		case "topic":
			if lit && (len(v) > 32 || strings.ContainsFunc(v, func(r rune) bool { return !(r < 128 && (isIDChar(byte(r)) && r != '.')) })) {
				return fmt.Errorf("the Topic header is at most 32 base64url characters")
			}
		default:
			return fmt.Errorf("browser templates take only TTL, Urgency and Topic headers")
		}
	}
	return nil
}

func xmlRoot(body string) (string, error) {
	d := xml.NewDecoder(bytes.NewReader([]byte(body)))
	for {
		tok, err := d.Token()
		if err != nil {
			return "", err
		}
		if se, ok := tok.(xml.StartElement); ok {
			return se.Name.Local, nil
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
