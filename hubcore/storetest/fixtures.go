package storetest

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/tag"
)

// A real uncompressed P-256 public key and a 16-byte auth secret, so that
// browser handles pass validation.
const (
	webPushP256DH = "BBNQgbHj4Sk1VuyhlNnkrSyoNDV85tir4zsBWDYth4H_o2JJZ46__ixHsy9mjXsm6JF3hoOe_tluGC_rUYJBZXE"
	webPushAuth   = "kY9SXZeoT2JajVVidPTv1w"
)

// APNSToken returns a valid APNs device token (64 hex digits, upper case)
// derived from n: distinct n give distinct tokens.
func APNSToken(n int) string { return fmt.Sprintf("A0%062X", n) }

// Channel returns a valid handle for platform p derived from n: distinct n
// give distinct handles (distinct keys) on every platform.
func Channel(p hubcore.Platform, n int) hubcore.PushChannel {
	switch p {
	case hubcore.APNS:
		return hubcore.PushChannel{Handle: APNSToken(n)}
	case hubcore.WNS:
		return hubcore.PushChannel{Handle: fmt.Sprintf("https://db5p.notify.windows.com/?token=AwYAAAB%d", n)}
	case hubcore.Browser:
		return hubcore.PushChannel{Endpoint: fmt.Sprintf("https://push.example.net/send/%d", n), P256DH: webPushP256DH, Auth: webPushAuth}
	default:
		return hubcore.PushChannel{Handle: fmt.Sprintf("tok:APA91b-%s-%d", p, n)}
	}
}

// TemplateFor returns a valid template for platform p with the given tags.
func TemplateFor(p hubcore.Platform, tags ...string) *hubcore.Template {
	switch p {
	case hubcore.WNS:
		return &hubcore.Template{Body: `<toast><visual><binding template="ToastText01"><text id="1">$(msg)</text></binding></visual></toast>`, Tags: tags}
	case hubcore.APNS:
		return &hubcore.Template{Body: `{"aps":{"alert":"$(msg)"}}`, Tags: tags}
	default:
		return &hubcore.Template{Body: `{"data":{"msg":"$(msg)"}}`, Tags: tags}
	}
}

// Installation returns a valid installation of platform p with a handle
// derived from n and the given tags; it is not validated yet.
func Installation(id string, p hubcore.Platform, n int, tags ...string) *hubcore.Installation {
	return &hubcore.Installation{
		InstallationID: id,
		Platform:       p,
		PushChannel:    Channel(p, n),
		Tags:           tags,
	}
}

// Registration returns a valid native registration of platform p with a
// handle derived from n and the given tags; it is not validated yet.
func Registration(id string, p hubcore.Platform, n int, tags ...string) *hubcore.Registration {
	return &hubcore.Registration{
		RegistrationID: id,
		Platform:       p,
		PushChannel:    Channel(p, n),
		Tags:           tags,
	}
}

// prepInst validates and stamps in, as the Store contract says callers do.
func (h *harness) prepInst(in *hubcore.Installation) *hubcore.Installation {
	h.t.Helper()
	if err := in.Validate(h.lim); err != nil {
		h.t.Fatalf("fixture installation %s invalid: %v", in.InstallationID, err)
	}
	in.Stamp(h.clock.Now(), h.lim)
	return in
}

func (h *harness) prepReg(r *hubcore.Registration) *hubcore.Registration {
	h.t.Helper()
	if err := r.Validate(h.lim); err != nil {
		h.t.Fatalf("fixture registration %s invalid: %v", r.RegistrationID, err)
	}
	r.Stamp(h.clock.Now(), h.lim)
	return r
}

// put validates, stamps and writes in unconditionally, failing the test on
// error. It returns the stored copy.
func (h *harness) put(in *hubcore.Installation) *hubcore.Installation {
	h.t.Helper()
	got, err := h.s.PutInstallation(h.ctx, h.prepInst(in), hubcore.Always)
	if err != nil {
		h.t.Fatalf("PutInstallation(%s): %v", in.InstallationID, err)
	}
	return got
}

func (h *harness) putReg(r *hubcore.Registration) *hubcore.Registration {
	h.t.Helper()
	got, err := h.s.PutRegistration(h.ctx, h.prepReg(r), hubcore.Always)
	if err != nil {
		h.t.Fatalf("PutRegistration(%s): %v", r.RegistrationID, err)
	}
	return got
}

func (h *harness) get(id string) *hubcore.Installation {
	h.t.Helper()
	got, err := h.s.GetInstallation(h.ctx, id)
	if err != nil {
		h.t.Fatalf("GetInstallation(%s): %v", id, err)
	}
	return got
}

func (h *harness) getReg(id string) *hubcore.Registration {
	h.t.Helper()
	got, err := h.s.GetRegistration(h.ctx, id)
	if err != nil {
		h.t.Fatalf("GetRegistration(%s): %v", id, err)
	}
	return got
}

// wantCode fails the test unless err is a *hubcore.Error with code c.
func (h *harness) wantCode(what string, err error, c hubcore.Code) *hubcore.Error {
	h.t.Helper()
	var he *hubcore.Error
	if !errors.As(err, &he) || he.Code != c {
		h.t.Errorf("%s: got error %v (code %q); want code %q", what, err, hubcore.CodeOf(err), c)
		return nil
	}
	return he
}

func (h *harness) wantConflict(what string, err error, current int64) {
	h.t.Helper()
	if he := h.wantCode(what, err, hubcore.CodeConflict); he != nil && he.Current != current {
		h.t.Errorf("%s: conflict with Current %d; want %d", what, he.Current, current)
	}
}

// instJSON is the content of an installation for comparisons: its wire JSON
// without what the store or the clock decide (Version, LastUpdate).
func instJSON(in *hubcore.Installation) string {
	c := in.Clone()
	c.Version = 0
	c.LastUpdate = time.Time{}
	b, err := json.Marshal(c)
	if err != nil {
		return "marshal error: " + err.Error()
	}
	// The read-only fields the wire shape carries are part of the content.
	return fmt.Sprintf("%s expired=%v lastActive=%s", b, in.PushChannelExpired, hubcore.FormatTime(in.LastActiveOn))
}

func regJSON(r *hubcore.Registration) string {
	b, err := json.Marshal(r)
	if err != nil {
		return "marshal error: " + err.Error()
	}
	return fmt.Sprintf("%s inst=%s user=%s", b, hubcore.InstallationKey(r.InstallationID), r.UserID)
}

// sameInst fails the test unless got has want's content and its templates
// are compiled.
func (h *harness) sameInst(what string, got, want *hubcore.Installation) {
	h.t.Helper()
	if got == nil {
		h.t.Errorf("%s: nil installation", what)
		return
	}
	if g, w := instJSON(got), instJSON(want); g != w {
		h.t.Errorf("%s: content differs\n got %s\nwant %s", what, g, w)
	}
	for name, tp := range got.Templates {
		if tp == nil || tp.Compiled() == nil {
			h.t.Errorf("%s: template %q returned without its compiled form", what, name)
		}
	}
}

func (h *harness) sameReg(what string, got, want *hubcore.Registration) {
	h.t.Helper()
	if got == nil {
		h.t.Errorf("%s: nil registration", what)
		return
	}
	if g, w := regJSON(got), regJSON(want); g != w {
		h.t.Errorf("%s: content differs\n got %s\nwant %s", what, g, w)
	}
	if got.Template != nil && got.Template.Compiled() == nil {
		h.t.Errorf("%s: template returned without its compiled form", what)
	}
}

// normRegID makes projected ids comparable: their installation id part is
// folded, as installation ids compare case-insensitively.
func normRegID(id string) string {
	if inst, hash, ok := hubcore.ParseProjectionID(id); ok {
		if hash == "" {
			return "inst~" + tag.Fold(inst)
		}
		return "inst~" + tag.Fold(inst) + "~" + strings.ToLower(hash)
	}
	return id
}

// sameIDs compares two lists of ids as sets and reports duplicates in got.
func sameIDs(got, want []string) error {
	var problems []string
	seen := map[string]bool{}
	for _, id := range got {
		if seen[id] {
			problems = append(problems, id+" listed twice")
		}
		seen[id] = true
	}
	wanted := map[string]bool{}
	for _, id := range want {
		wanted[id] = true
		if !seen[id] {
			problems = append(problems, id+" missing")
		}
	}
	for id := range seen {
		if !wanted[id] {
			problems = append(problems, id+" unexpected")
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	if len(problems) > 12 {
		problems = append(problems[:12], fmt.Sprintf("and %d more", len(problems)-12))
	}
	return errors.New(strings.Join(problems, "; "))
}
