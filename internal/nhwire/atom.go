package nhwire

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/pushgate/pushgate/hubcore"
)

// XML namespaces of the Notification Hubs documents.
const (
	NSAtom     = "http://www.w3.org/2005/Atom"
	NSConnect  = "http://schemas.microsoft.com/netservices/2010/10/servicebus/connect"
	NSInstance = "http://www.w3.org/2001/XMLSchema-instance"
	NSMetadata = "http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"
)

// ContinuationHeader is the response header that carries a listing's
// continuation token; clients send it back as the continuationtoken query
// parameter. Its absence means the last page.
const ContinuationHeader = "x-ms-continuationtoken"

// Content types of the Atom responses.
const (
	ContentTypeEntry = "application/atom+xml;type=entry;charset=utf-8"
	ContentTypeFeed  = "application/atom+xml;type=feed;charset=utf-8"
	ContentTypeXML   = "application/xml; charset=utf-8"
)

// MaxEntryBytes bounds a registration request body; templates are the only
// large part and a payload is at most a few kilobytes.
const MaxEntryBytes = 1 << 20

// maxDepth bounds element nesting; a registration entry is five deep.
const maxDepth = 16

// descKind describes one registration description type.
type descKind struct {
	platform hubcore.Platform
	template bool
}

// descKinds maps a description element's local name to its platform.
// FcmRegistrationDescription is the legacy name the service answered as Gcm.
var descKinds = map[string]descKind{
	"AppleRegistrationDescription":           {hubcore.APNS, false},
	"AppleTemplateRegistrationDescription":   {hubcore.APNS, true},
	"FcmV1RegistrationDescription":           {hubcore.FCMV1, false},
	"FcmV1TemplateRegistrationDescription":   {hubcore.FCMV1, true},
	"GcmRegistrationDescription":             {hubcore.GCM, false},
	"GcmTemplateRegistrationDescription":     {hubcore.GCM, true},
	"FcmRegistrationDescription":             {hubcore.GCM, false},
	"FcmTemplateRegistrationDescription":     {hubcore.GCM, true},
	"WindowsRegistrationDescription":         {hubcore.WNS, false},
	"WindowsTemplateRegistrationDescription": {hubcore.WNS, true},
	"AdmRegistrationDescription":             {hubcore.ADM, false},
	"AdmTemplateRegistrationDescription":     {hubcore.ADM, true},
	"BaiduRegistrationDescription":           {hubcore.Baidu, false},
	"BaiduTemplateRegistrationDescription":   {hubcore.Baidu, true},
	"BrowserRegistrationDescription":         {hubcore.Browser, false},
	"BrowserTemplateRegistrationDescription": {hubcore.Browser, true},
	"XiaomiRegistrationDescription":          {hubcore.Xiaomi, false},
	"XiaomiTemplateRegistrationDescription":  {hubcore.Xiaomi, true},
}

// kindName is the root element emitted for a platform: what the JS client
// turns into create<Name>.
var kindName = map[hubcore.Platform]string{
	hubcore.APNS: "Apple", hubcore.FCMV1: "FcmV1", hubcore.GCM: "Gcm", hubcore.WNS: "Windows",
	hubcore.ADM: "Adm", hubcore.Baidu: "Baidu", hubcore.Browser: "Browser", hubcore.Xiaomi: "Xiaomi",
}

// handleElement names the single-handle element of each platform but
// Baidu and Browser, which have several.
var handleElement = map[hubcore.Platform]string{
	hubcore.APNS: "DeviceToken", hubcore.FCMV1: "FcmV1RegistrationId", hubcore.GCM: "GcmRegistrationId",
	hubcore.WNS: "ChannelUri", hubcore.ADM: "AdmRegistrationId", hubcore.Xiaomi: "XiaomiRegistrationId",
}

// node is a parsed XML element; only local names matter, so any prefix or
// namespace a client uses is accepted.
type node struct {
	name     string
	attrs    []xml.Attr
	children []*node
	text     strings.Builder
}

func (n *node) child(name string) *node {
	for _, c := range n.children {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (n *node) nil() bool {
	for _, a := range n.attrs {
		if a.Name.Local == "nil" && strings.TrimSpace(a.Value) == "true" {
			return true
		}
	}
	return false
}

func invalidf(field, format string, args ...any) *hubcore.Error {
	return &hubcore.Error{Code: hubcore.CodeInvalid, Field: field, Reason: fmt.Sprintf(format, args...)}
}

// parseTree reads one XML document into a tree. Only UTF-8 (and its
// subset US-ASCII) is accepted, which is what every client sends.
func parseTree(data []byte) (*node, error) {
	if len(data) > MaxEntryBytes {
		return nil, &hubcore.Error{Code: hubcore.CodeLimit, Reason: fmt.Sprintf("the body is larger than %d bytes", MaxEntryBytes)}
	}
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	d := xml.NewDecoder(bytes.NewReader(data))
	d.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		switch strings.ToLower(label) {
		case "utf-8", "utf8", "us-ascii", "ascii":
			return r, nil
		}
		return nil, fmt.Errorf("unsupported encoding %q", label)
	}
	var root *node
	var stack []*node
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, invalidf("", "the body is not well-formed XML: %v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			n := &node{name: t.Name.Local, attrs: t.Attr}
			if len(stack) == 0 {
				if root != nil {
					return nil, invalidf("", "the body has more than one root element")
				}
				root = n
			} else {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			}
			if len(stack) >= maxDepth {
				return nil, invalidf(n.name, "elements nest deeper than %d", maxDepth)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) > 0 {
				stack[len(stack)-1].text.Write(t)
			} else if len(bytes.TrimSpace(t)) > 0 {
				return nil, invalidf("", "text outside the root element")
			}
		}
	}
	if root == nil {
		return nil, invalidf("", "the body is empty")
	}
	return root, nil
}

// DecodeEntry reads a registration request: an Atom <entry> whose
// <content> holds one *RegistrationDescription (a bare description is
// accepted too). It is lenient as clients require: any element order, any
// namespace prefixes, an optional XML declaration, CDATA or escaped text,
// surrounding whitespace (all values are trimmed), empty or i:nil elements
// treated as absent, unknown elements ignored, the legacy
// FcmRegistrationDescription read as GCM.
//
// RegistrationId, ETag (into Version) and ExpirationTime are returned when
// present, but clients strip them and the handler decides what they mean.
// Windows' SecondaryTileName has no place in hubcore.Registration and is
// dropped. The result is not validated (Registration.Validate does that).
// Errors are *hubcore.Error, CodeInvalid with the offending element as
// Field (CodeUnsupported for Mpns descriptions, CodeLimit for huge bodies).
func DecodeEntry(data []byte) (*hubcore.Registration, error) {
	root, err := parseTree(data)
	if err != nil {
		return nil, err
	}
	desc := root
	if root.name == "entry" {
		content := root.child("content")
		if content == nil {
			return nil, invalidf("content", "the entry has no <content>")
		}
		if len(content.children) == 0 {
			return nil, invalidf("content", "<content> holds no registration description")
		}
		desc = content.children[0]
	}
	kind, ok := descKinds[desc.name]
	if !ok {
		if strings.HasPrefix(desc.name, "Mpns") {
			return nil, &hubcore.Error{Code: hubcore.CodeUnsupported, Field: desc.name, Reason: "Windows Phone (MPNS) registrations are retired and not supported"}
		}
		return nil, invalidf(desc.name, "unknown registration description type %q", desc.name)
	}
	fields := map[string]*node{}
	for _, c := range desc.children {
		if fields[c.name] != nil {
			return nil, invalidf(c.name, "<%s> appears more than once", c.name)
		}
		fields[c.name] = c
	}
	// text returns a leaf element's trimmed text, "" when absent or nil.
	text := func(name string) (string, error) {
		n := fields[name]
		if n == nil || n.nil() {
			return "", nil
		}
		if len(n.children) > 0 {
			return "", invalidf(name, "<%s> must hold text, not elements", name)
		}
		return strings.TrimSpace(n.text.String()), nil
	}
	r := &hubcore.Registration{Platform: kind.platform}
	var s string
	if r.RegistrationID, err = text("RegistrationId"); err != nil {
		return nil, err
	}
	if s, err = text("ETag"); err != nil {
		return nil, err
	}
	if s != "" {
		if v, ok := ParseETag(s); ok {
			r.Version = v
		}
	}
	if s, err = text("ExpirationTime"); err != nil {
		return nil, err
	}
	if s != "" {
		if r.ExpirationTime, err = hubcore.ParseTime(s); err != nil {
			return nil, invalidf("ExpirationTime", "%v", err)
		}
	}
	if s, err = text("Tags"); err != nil {
		return nil, err
	}
	for _, t := range strings.Split(s, ",") {
		if t = strings.TrimSpace(t); t != "" {
			r.Tags = append(r.Tags, t)
		}
	}
	if s, err = text("PushVariables"); err != nil {
		return nil, err
	}
	if s != "" {
		if r.PushVariables, err = parsePushVariables(s); err != nil {
			return nil, err
		}
	}
	switch kind.platform {
	case hubcore.Baidu:
		if r.PushChannel.Handle, err = text("BaiduChannelId"); err != nil {
			return nil, err
		}
		if r.PushChannel.BaiduUserID, err = text("BaiduUserId"); err != nil {
			return nil, err
		}
		if r.PushChannel.Handle == "" {
			return nil, invalidf("BaiduChannelId", "<BaiduChannelId> is required")
		}
	case hubcore.Browser:
		for _, f := range []struct {
			name string
			dst  *string
		}{{"Endpoint", &r.PushChannel.Endpoint}, {"P256DH", &r.PushChannel.P256DH}, {"Auth", &r.PushChannel.Auth}} {
			if *f.dst, err = text(f.name); err != nil {
				return nil, err
			}
			if *f.dst == "" {
				return nil, invalidf(f.name, "<%s> is required", f.name)
			}
		}
	default:
		name := handleElement[kind.platform]
		if desc.name == "FcmRegistrationDescription" || desc.name == "FcmTemplateRegistrationDescription" {
			if fields[name] == nil {
				name = "FcmRegistrationId"
			}
		}
		if r.PushChannel.Handle, err = text(name); err != nil {
			return nil, err
		}
		if r.PushChannel.Handle == "" {
			return nil, invalidf(name, "<%s> is required", name)
		}
	}
	if !kind.template {
		return r, nil
	}
	t := &hubcore.Template{}
	if t.Body, err = text("BodyTemplate"); err != nil {
		return nil, err
	}
	if t.Body == "" {
		return nil, invalidf("BodyTemplate", "<BodyTemplate> is required")
	}
	if r.TemplateName, err = text("TemplateName"); err != nil {
		return nil, err
	}
	switch kind.platform {
	case hubcore.APNS:
		if t.Expiry, err = text("Expiry"); err != nil {
			return nil, err
		}
		if t.Priority, err = text("Priority"); err != nil {
			return nil, err
		}
		if t.Headers, err = parseHeaders(fields["ApnsHeaders"], "ApnsHeaders", "ApnsHeader"); err != nil {
			return nil, err
		}
	case hubcore.WNS:
		if t.Headers, err = parseHeaders(fields["WnsHeaders"], "WnsHeaders", "WnsHeader"); err != nil {
			return nil, err
		}
	}
	r.Template = t
	return r, nil
}

// parsePushVariables reads the JSON object that PushVariables carries as
// text. Numbers and booleans are kept as their JSON text, since push
// variables are strings substituted into templates.
func parsePushVariables(s string) (map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(s), &raw); err != nil || raw == nil {
		return nil, invalidf("PushVariables", "<PushVariables> must be a JSON object of strings")
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		var str string
		if err := json.Unmarshal(v, &str); err == nil {
			out[k] = str
			continue
		}
		v = bytes.TrimSpace(v)
		if len(v) > 0 && (v[0] == '-' || v[0] >= '0' && v[0] <= '9' || v[0] == 't' || v[0] == 'f') {
			out[k] = string(v)
			continue
		}
		return nil, invalidf("PushVariables", "push variable %q must be a string", k)
	}
	if len(out) == 0 {
		return nil, nil // {} is no push variables, as an absent element is
	}
	return out, nil
}

// parseHeaders reads <ApnsHeaders><ApnsHeader><Header/><Value/></ApnsHeader>…
func parseHeaders(n *node, listName, itemName string) (map[string]string, error) {
	if n == nil || n.nil() || len(n.children) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, item := range n.children {
		field := listName + "." + itemName
		if item.name != itemName {
			return nil, invalidf(listName, "<%s> may only hold <%s> elements, not <%s>", listName, itemName, item.name)
		}
		var name, value string
		var seenName, seenValue bool
		for _, c := range item.children {
			switch c.name {
			case "Header":
				if seenName {
					return nil, invalidf(field+".Header", "<Header> appears more than once")
				}
				seenName, name = true, strings.TrimSpace(c.text.String())
			case "Value":
				if seenValue {
					return nil, invalidf(field+".Value", "<Value> appears more than once")
				}
				seenValue, value = true, strings.TrimSpace(c.text.String())
			}
		}
		if name == "" {
			return nil, invalidf(field+".Header", "<%s> needs a <Header> name", itemName)
		}
		for k := range out {
			if strings.EqualFold(k, name) {
				return nil, invalidf(field+".Header", "header %q appears more than once", name)
			}
		}
		out[name] = value
	}
	return out, nil
}

// ParseETag reads an ETag as clients write it (n, "n", W/"n") and returns
// the version; ok is false for anything else, including "*".
func ParseETag(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	s = strings.TrimPrefix(s, "w/")
	s = strings.Trim(s, `"`)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, false
	}
	return v, true
}

// FormatETag is the HTTP ETag header value of a version: W/"n".
func FormatETag(v int64) string { return `W/"` + strconv.FormatInt(v, 10) + `"` }

// EntryOptions says where an entry lives, for its <id> and <link>.
type EntryOptions struct {
	// CollectionURL is the absolute URL, without query, of the collection
	// the entry is listed in: https://{host}/{hub}/registrations, or
	// https://{host}/{hub}/tags/{tag}/registrations in a by-tag feed.
	CollectionURL string
	// APIVersion is echoed in the URLs; "" means 2020-06.
	APIVersion string
	// Published and Updated are the entry's Atom times; a zero time leaves
	// the element out.
	Published, Updated time.Time
}

func (o EntryOptions) entryURL(id string) string {
	v := o.APIVersion
	if v == "" {
		v = "2020-06"
	}
	return strings.TrimRight(o.CollectionURL, "/") + "/" + id + "?api-version=" + v
}

// atomTime is the Atom timestamp format: UTC, fractional seconds only when
// non-zero.
func atomTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.9999999Z") }

// escape writes s as XML character data: only &, < and > are escaped (so
// JSON stays readable, as the service writes it), CR is written as a
// reference so that a parser gives it back, and characters XML cannot carry
// at all become U+FFFD.
func escape(b *bytes.Buffer, s string) { escapeXML(b, s, false) }

// escapeAttr writes s as an attribute value in double quotes.
func escapeAttr(b *bytes.Buffer, s string) { escapeXML(b, s, true) }

func escapeXML(b *bytes.Buffer, s string, attr bool) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				b.WriteRune(utf8.RuneError)
				continue
			}
		}
		switch {
		case r == '&':
			b.WriteString("&amp;")
		case r == '<':
			b.WriteString("&lt;")
		case r == '>':
			b.WriteString("&gt;")
		case r == '\r':
			b.WriteString("&#xD;")
		case attr && r == '"':
			b.WriteString("&quot;")
		case attr && r == '\n':
			b.WriteString("&#xA;")
		case attr && r == '\t':
			b.WriteString("&#x9;")
		case !isXMLChar(r):
			b.WriteRune(utf8.RuneError)
		default:
			b.WriteRune(r)
		}
	}
}

// cdataSafe reports whether s survives a CDATA section unchanged: no CR
// (parsers normalise it) and only characters XML allows.
func cdataSafe(s string) bool {
	for _, r := range s {
		if r == '\r' || !isXMLChar(r) {
			return false
		}
	}
	return utf8.ValidString(s)
}

func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

func leaf(b *bytes.Buffer, name, value string) {
	if value == "" {
		return
	}
	b.WriteString("<" + name + ">")
	escape(b, value)
	b.WriteString("</" + name + ">")
}

// writeEntry writes one <entry>; top says whether it is the document root
// (which declares the Atom namespace itself).
func writeEntry(b *bytes.Buffer, r *hubcore.Registration, o EntryOptions, top bool) error {
	kind, ok := kindName[r.Platform]
	if !ok {
		return fmt.Errorf("nhwire: no registration description type for platform %q", r.Platform)
	}
	if r.Template != nil {
		kind += "Template"
	}
	kind += "RegistrationDescription"
	u := o.entryURL(r.RegistrationID)
	b.WriteString(`<entry a:etag="W/&quot;` + strconv.FormatInt(r.Version, 10) + `&quot;"`)
	if top {
		b.WriteString(` xmlns="` + NSAtom + `"`)
	}
	b.WriteString(` xmlns:a="` + NSMetadata + `"><id>`)
	escape(b, u)
	b.WriteString(`</id><title type="text">`)
	escape(b, r.RegistrationID)
	b.WriteString(`</title>`)
	if !o.Published.IsZero() {
		b.WriteString("<published>" + atomTime(o.Published) + "</published>")
	}
	if !o.Updated.IsZero() {
		b.WriteString("<updated>" + atomTime(o.Updated) + "</updated>")
	}
	b.WriteString(`<link rel="self" href="`)
	escapeAttr(b, u)
	b.WriteString(`"/><content type="application/xml"><` + kind + ` xmlns="` + NSConnect + `" xmlns:i="` + NSInstance + `">`)
	b.WriteString("<ETag>" + strconv.FormatInt(r.Version, 10) + "</ETag>")
	b.WriteString("<ExpirationTime>" + hubcore.FormatTime(r.ExpirationTime) + "</ExpirationTime>")
	leaf(b, "RegistrationId", r.RegistrationID)
	leaf(b, "Tags", strings.Join(r.Tags, ","))
	if len(r.PushVariables) > 0 {
		pv, err := json.Marshal(r.PushVariables) // sorted keys: stable output
		if err != nil {
			return err
		}
		leaf(b, "PushVariables", string(pv))
	}
	switch r.Platform {
	case hubcore.Baidu:
		leaf(b, "BaiduUserId", r.PushChannel.BaiduUserID)
		leaf(b, "BaiduChannelId", r.PushChannel.Handle)
	case hubcore.Browser:
		leaf(b, "Endpoint", r.PushChannel.Endpoint)
		leaf(b, "P256DH", r.PushChannel.P256DH)
		leaf(b, "Auth", r.PushChannel.Auth)
	default:
		leaf(b, handleElement[r.Platform], r.PushChannel.Handle)
	}
	if t := r.Template; t != nil {
		b.WriteString("<BodyTemplate>")
		if cdataSafe(t.Body) {
			b.WriteString("<![CDATA[" + strings.ReplaceAll(t.Body, "]]>", "]]]]><![CDATA[>") + "]]>")
		} else {
			escape(b, t.Body)
		}
		b.WriteString("</BodyTemplate>")
		switch r.Platform {
		case hubcore.APNS:
			leaf(b, "Expiry", t.Expiry)
			leaf(b, "TemplateName", r.TemplateName)
			leaf(b, "Priority", t.Priority)
			writeHeaders(b, t.Headers, "ApnsHeaders", "ApnsHeader")
		case hubcore.WNS:
			writeHeaders(b, t.Headers, "WnsHeaders", "WnsHeader")
			leaf(b, "TemplateName", r.TemplateName)
		default:
			leaf(b, "TemplateName", r.TemplateName)
		}
	}
	b.WriteString("</" + kind + "></content></entry>")
	return nil
}

func writeHeaders(b *bytes.Buffer, h map[string]string, list, item string) {
	if len(h) == 0 {
		return
	}
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	b.WriteString("<" + list + ">")
	for _, k := range names {
		b.WriteString("<" + item + "><Header>")
		escape(b, k)
		b.WriteString("</Header><Value>")
		escape(b, h[k])
		b.WriteString("</Value></" + item + ">")
	}
	b.WriteString("</" + list + ">")
}

const xmlDecl = `<?xml version="1.0" encoding="utf-8"?>`

// EncodeEntry writes a registration as the service's Atom entry: the a:etag
// attribute, <id>, <title>, times, the self link and the description with
// the .NET DataContract element order (ETag, ExpirationTime, RegistrationId,
// Tags, PushVariables, the platform block, the template block), BodyTemplate
// in CDATA, tags comma-joined without spaces, a zero ExpirationTime as the
// year-9999 "never". Serve it as ContentTypeEntry with ETag: FormatETag.
func EncodeEntry(r *hubcore.Registration, o EntryOptions) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(xmlDecl)
	if err := writeEntry(&b, r, o, true); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// FeedOptions describes a listing page.
type FeedOptions struct {
	// SelfURL is the absolute URL of this page, query included.
	SelfURL string
	// Updated is the feed's time; zero leaves <updated> out.
	Updated time.Time
	// Entry locates each entry (Published/Updated apply to all).
	Entry EntryOptions
	// ContinuationToken, when not "", says more pages exist. The handler
	// must also send it as the ContinuationHeader (clients read only the
	// header); the feed carries it as a <link rel="next"> whose href is
	// SelfURL with continuationtoken set, for Atom readers.
	ContinuationToken string
}

// EncodeFeed writes a listing page: an Atom feed titled Registrations with
// one entry per registration, in the given order; zero registrations give a
// feed without entries. Serve it as ContentTypeFeed.
func EncodeFeed(regs []hubcore.Registration, o FeedOptions) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(xmlDecl)
	b.WriteString(`<feed xmlns="` + NSAtom + `"><title type="text">Registrations</title><id>`)
	escape(&b, o.SelfURL)
	b.WriteString("</id>")
	if !o.Updated.IsZero() {
		b.WriteString("<updated>" + atomTime(o.Updated) + "</updated>")
	}
	b.WriteString(`<link rel="self" href="`)
	escapeAttr(&b, o.SelfURL)
	b.WriteString(`"/>`)
	if o.ContinuationToken != "" {
		b.WriteString(`<link rel="next" href="`)
		escapeAttr(&b, withContinuation(o.SelfURL, o.ContinuationToken))
		b.WriteString(`"/>`)
	}
	for i := range regs {
		if err := writeEntry(&b, &regs[i], o.Entry, false); err != nil {
			return nil, err
		}
	}
	b.WriteString("</feed>")
	return b.Bytes(), nil
}

// withContinuation sets continuationtoken in u's query, replacing one that
// is there (in any case). The token is already URL-encoded, as issued.
func withContinuation(u, token string) string {
	base, query, _ := strings.Cut(u, "?")
	var keep []string
	for _, p := range strings.Split(query, "&") {
		k, _, _ := strings.Cut(p, "=")
		if p == "" || strings.EqualFold(k, "continuationtoken") {
			continue
		}
		keep = append(keep, p)
	}
	keep = append(keep, "continuationtoken="+token)
	return base + "?" + strings.Join(keep, "&")
}
