package hubcore

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore/tag"
)

// Registration is the older Notification Hubs model: one handle, one
// description (native, or a template), tags. Installations are also seen as
// registrations (see Installation.Registrations), so sends, listings and tag
// queries treat both models alike.
type Registration struct {
	RegistrationID string
	Platform       Platform
	PushChannel    PushChannel
	Tags           []string
	PushVariables  map[string]string
	// Template is nil for a native registration.
	Template     *Template
	TemplateName string
	// ExpirationTime is when the hub forgets the registration; zero: never.
	ExpirationTime time.Time
	// Version is the ETag: 1 on create, +1 on each update.
	Version int64

	// InstallationID and UserID are set on registrations projected from an
	// installation; such registrations carry the implicit system tags.
	InstallationID string
	UserID         string
}

// IsTemplate reports whether the registration renders a template.
func (r *Registration) IsTemplate() bool { return r.Template != nil }

// Validate checks a registration written through the registrations API and
// puts it in canonical form, like Installation.Validate.
func (r *Registration) Validate(lim Limits) error {
	lim = lim.withDefaults()
	if err := ValidateRegistrationID(r.RegistrationID); err != nil {
		return err
	}
	if r.InstallationID != "" {
		return invalid("RegistrationId", "registrations of an installation are changed through the installation")
	}
	if _, err := ParsePlatform(string(r.Platform)); err != nil {
		return err
	}
	if err := validateChannel(channelField(r.Platform), r.Platform, r.PushChannel); err != nil {
		return err
	}
	var err error
	if r.Tags, err = canonicalTags("Tags", r.Tags, lim.MaxTags); err != nil {
		return err
	}
	if err := validatePushVariables(r.PushVariables, lim); err != nil {
		return err
	}
	if r.Template == nil {
		if r.TemplateName != "" {
			return invalid("TemplateName", "a native registration has no template name")
		}
		return nil
	}
	if r.TemplateName != "" {
		if err := ValidateTemplateName("TemplateName", r.TemplateName); err != nil {
			return err
		}
	}
	if len(r.Template.Tags) > 0 {
		return invalid("Tags", "registration templates have no tags of their own; use the registration's Tags")
	}
	return r.Template.compile("BodyTemplate", r.Platform, lim)
}

// channelField names the handle's element in the registration XML, so that
// errors point at what the client wrote.
func channelField(p Platform) string {
	switch p {
	case APNS:
		return "DeviceToken"
	case FCMV1:
		return "FcmV1RegistrationId"
	case GCM:
		return "GcmRegistrationId"
	case WNS:
		return "ChannelUri"
	case ADM:
		return "AdmRegistrationId"
	case Baidu:
		return "BaiduChannelId"
	case Xiaomi:
		return "XiaomiRegistrationId"
	default:
		return "Endpoint"
	}
}

// NewRegistrationID returns a fresh server-issued registration id in the
// service's shape, {int63}-{int63}-{digit}, from a cryptographic source so
// ids cannot be guessed.
func NewRegistrationID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	a := binary.BigEndian.Uint64(b[:8]) >> 1
	c := binary.BigEndian.Uint64(b[8:]) >> 1
	return strconv.FormatUint(a, 10) + "-" + strconv.FormatUint(c, 10) + "-" + strconv.Itoa(int(b[0]%9)+1)
}

// projectionSep separates the parts of a projected registration id. It is
// outside the alphabet of installation and registration ids, so projected
// ids can never collide with ids a client chooses.
const projectionSep = "~"

// ProjectionID is the registration id under which an installation's native
// registration (templateName "") or one of its templates is listed. It is
// derived, not stored, so it stays the same across rewrites of the
// installation, whatever the case of the id a client writes.
func ProjectionID(installationID, templateName string) string {
	installationID = InstallationKey(installationID)
	if templateName == "" {
		return "inst" + projectionSep + installationID
	}
	h := fnv.New32a()
	h.Write([]byte(templateName))
	return fmt.Sprintf("inst%s%s%s%08x", projectionSep, installationID, projectionSep, h.Sum32())
}

// ParseProjectionID splits a projected registration id. templateHash is ""
// for the native registration.
func ParseProjectionID(id string) (installationID, templateHash string, ok bool) {
	rest, ok := strings.CutPrefix(id, "inst"+projectionSep)
	if !ok {
		return "", "", false
	}
	installationID, templateHash, _ = strings.Cut(rest, projectionSep)
	return installationID, templateHash, installationID != ""
}

// InstallationKey is the identity of an installation id. Ids compare
// case-insensitively because the $InstallationId:{…} tag does: were "ABC" and
// "abc" two installations, a send to one's system tag would reach both.
func InstallationKey(id string) string { return tag.Fold(id) }

// ImplicitTags returns the system tags the installation carries.
func (in *Installation) ImplicitTags() []string {
	t := []string{tag.ForInstallation(in.InstallationID)}
	if in.UserID != "" {
		t = append(t, tag.ForUser(in.UserID))
	}
	return t
}

// Registrations returns the installation as registrations: one native, then
// one per template in name order. Each carries the installation's tags and
// its implicit system tags; a template registration also carries the
// template's tags and, when the name is a valid tag, the name itself, so a
// template send can aim at one template by name.
func (in *Installation) Registrations() []Registration {
	base := append(cloneStrings(in.Tags), in.ImplicitTags()...)
	regs := make([]Registration, 0, 1+len(in.Templates))
	regs = append(regs, Registration{
		RegistrationID: ProjectionID(in.InstallationID, ""),
		Platform:       in.Platform,
		PushChannel:    in.PushChannel,
		Tags:           base,
		PushVariables:  in.PushVariables,
		ExpirationTime: in.ExpirationTime,
		Version:        in.Version,
		InstallationID: in.InstallationID,
		UserID:         in.UserID,
	})
	for _, name := range sortedKeys(in.Templates) {
		t := in.Templates[name]
		tags := unionTags(cloneStrings(base), t.Tags)
		if tag.Validate(name) == nil && !tag.IsSystem(name) {
			tags = unionTags(tags, []string{name})
		}
		regs = append(regs, Registration{
			RegistrationID: ProjectionID(in.InstallationID, name),
			Platform:       in.Platform,
			PushChannel:    in.PushChannel,
			Tags:           tags,
			PushVariables:  in.PushVariables,
			Template:       t,
			TemplateName:   name,
			ExpirationTime: in.ExpirationTime,
			Version:        in.Version,
			InstallationID: in.InstallationID,
			UserID:         in.UserID,
		})
	}
	return regs
}

// IndexTags returns every tag under which the installation must be found in
// a tag index: the union of its registrations' tags, folded and sorted. A
// store indexes the installation once under these; a candidate is then
// matched against each registration's own tags.
func (in *Installation) IndexTags() []string {
	var all []string
	for _, r := range in.Registrations() {
		for _, t := range r.Tags {
			all = append(all, tag.Fold(t))
		}
	}
	sort.Strings(all)
	out := all[:0]
	for i, t := range all {
		if i == 0 || t != all[i-1] {
			out = append(out, t)
		}
	}
	return out
}

// TagSet returns the registration's tags as a set for expression matching.
func (r *Registration) TagSet() tag.Set { return tag.NewSet(r.Tags...) }

// Expired reports whether the entry's expiration time has passed.
func (in *Installation) Expired(now time.Time) bool {
	return !in.ExpirationTime.IsZero() && !now.Before(in.ExpirationTime)
}

// Expired reports whether the registration's expiration time has passed.
func (r *Registration) Expired(now time.Time) bool {
	return !r.ExpirationTime.IsZero() && !now.Before(r.ExpirationTime)
}

// Stamp sets what the hub decides on every write: the update time and the
// expiration, capped by the hub's TTL.
func (in *Installation) Stamp(now time.Time, lim Limits) {
	in.LastUpdate = now.UTC()
	in.ExpirationTime = capExpiry(in.ExpirationTime, now, lim.TTL)
}

// Stamp caps the registration's expiration by the hub's TTL.
func (r *Registration) Stamp(now time.Time, lim Limits) {
	r.ExpirationTime = capExpiry(r.ExpirationTime, now, lim.TTL)
}

func capExpiry(want, now time.Time, ttl time.Duration) time.Time {
	if ttl <= 0 {
		return want
	}
	max := now.Add(ttl).UTC()
	if want.IsZero() || want.After(max) {
		return max
	}
	return want
}

// registrationWire is pushgate's JSON shape of a registration, used by
// export and import (the Notification Hubs API speaks Atom XML for
// registrations; that codec lives with the API).
type registrationWire struct {
	RegistrationID string            `json:"registrationId"`
	Platform       string            `json:"platform"`
	PushChannel    json.RawMessage   `json:"pushChannel,omitempty"`
	BaiduUserID    string            `json:"baiduUserId,omitempty"`
	Tags           []string          `json:"tags,omitempty"`
	PushVariables  map[string]string `json:"pushVariables,omitempty"`
	Template       *templateWire     `json:"template,omitempty"`
	TemplateName   string            `json:"templateName,omitempty"`
	ExpirationTime string            `json:"expirationTime"`
}

// MarshalJSON writes the registration in pushgate's JSON shape.
func (r *Registration) MarshalJSON() ([]byte, error) {
	w := registrationWire{
		RegistrationID: r.RegistrationID,
		Platform:       string(r.Platform),
		BaiduUserID:    r.PushChannel.BaiduUserID,
		Tags:           r.Tags,
		PushVariables:  r.PushVariables,
		TemplateName:   r.TemplateName,
		ExpirationTime: FormatTime(r.ExpirationTime),
	}
	var err error
	if w.PushChannel, err = r.PushChannel.marshal(r.Platform); err != nil {
		return nil, err
	}
	if r.Template != nil {
		w.Template = r.Template.wire()
	}
	return json.Marshal(&w)
}

// UnmarshalJSON reads what MarshalJSON writes; Validate checks the rules.
func (r *Registration) UnmarshalJSON(data []byte) error {
	var w struct {
		RegistrationID string             `json:"registrationId"`
		Platform       string             `json:"platform"`
		PushChannel    json.RawMessage    `json:"pushChannel"`
		BaiduUserID    string             `json:"baiduUserId"`
		Tags           []*string          `json:"tags"`
		PushVariables  map[string]*string `json:"pushVariables"`
		Template       json.RawMessage    `json:"template"`
		TemplateName   string             `json:"templateName"`
		ExpirationTime string             `json:"expirationTime"`
	}
	if err := decodeStrict(data, &w); err != nil {
		return err
	}
	p, err := ParsePlatform(w.Platform)
	if err != nil {
		return err
	}
	out := Registration{RegistrationID: w.RegistrationID, Platform: p, TemplateName: w.TemplateName}
	if out.PushChannel, err = parsePushChannel(w.PushChannel); err != nil {
		return err
	}
	out.PushChannel.BaiduUserID = w.BaiduUserID
	if out.Tags, err = nonNullStrings("tags", w.Tags); err != nil {
		return err
	}
	if out.PushVariables, err = nonNullMap("pushVariables", w.PushVariables); err != nil {
		return err
	}
	if !isNull(w.Template) {
		if out.Template, err = parseTemplateJSON("template", w.Template); err != nil {
			return err
		}
	}
	if w.ExpirationTime != "" {
		if out.ExpirationTime, err = ParseTime(w.ExpirationTime); err != nil {
			return invalid("expirationTime", "%v", err)
		}
	}
	*r = out
	return nil
}
