package nhwire

import (
	"bytes"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
)

// EncodeError writes the service's error body,
// <Error><Code>status</Code><Detail>detail</Detail></Error>, in that order
// because .NET reads it with a forward-only reader. Conventionally detail
// ends with "TrackingId:<id>,TimeStamp:<time>" (see ErrorDetail). Serve it
// as ContentTypeXML.
func EncodeError(status int, detail string) []byte {
	var b bytes.Buffer
	b.WriteString("<Error><Code>" + strconv.Itoa(status) + "</Code><Detail>")
	escape(&b, detail)
	b.WriteString("</Detail></Error>")
	return b.Bytes()
}

// ErrorDetail appends the service's conventional suffix to a detail text:
// "text.TrackingId:<id>,TimeStamp:<M/D/YYYY h:mm:ss AM>".
func ErrorDetail(text, trackingID string, at time.Time) string {
	return text + "TrackingId:" + trackingID + ",TimeStamp:" + at.UTC().Format("1/2/2006 3:04:05 PM")
}

// FormatName is the name Notification Hubs uses for a platform in its
// documents (ApplicationPlatform, TargetPlatforms, PnsFeedback Platform):
// the send format's name, which differs from the installation's platform
// name for APNs (apple) and WNS (windows).
func FormatName(p hubcore.Platform) string {
	switch p {
	case hubcore.APNS:
		return "apple"
	case hubcore.WNS:
		return "windows"
	default:
		return string(p) // fcmv1, gcm, adm, baidu, browser, xiaomi
	}
}

// The test-send outcome texts the service is seen to return; clients show
// them to people, nothing parses them.
const (
	outcomeSent    = "The Notification was successfully sent to the Push Notification System"
	outcomeInvalid = "The Push Notification System handle for the registration is invalid"
	outcomeExpired = "The Push Notification System handle for the registration is no longer valid"
	outcomeToken   = "The Token obtained from the Token Provider is wrong"
)

// OutcomeText is the Outcome text of one test-send result: the service's
// sentence where one is known, otherwise the outcome name and the PNS's
// answer.
func OutcomeText(r fanout.TestResult) string {
	switch r.Outcome {
	case hubcore.OutcomeSuccess:
		return outcomeSent
	case hubcore.OutcomeExpiredChannel:
		return outcomeExpired
	case hubcore.OutcomeBadChannel, hubcore.OutcomeWrongToken, hubcore.OutcomeWrongChannel:
		return outcomeInvalid
	case hubcore.OutcomeInvalidCredentials:
		return outcomeToken
	}
	if r.Detail != "" {
		return string(r.Outcome) + ": " + r.Detail
	}
	return string(r.Outcome)
}

// EncodeNotificationOutcome writes a test send's NotificationOutcome:
// Success, Failure, then Results with one RegistrationResult per target
// (ApplicationPlatform, PnsHandle, RegistrationId, Outcome — all four
// always present, the JS client requires them). Success counts the
// OutcomeSuccess results, Failure all others. No results give
// <Results />.
func EncodeNotificationOutcome(results []fanout.TestResult) []byte {
	ok := 0
	for _, r := range results {
		if r.Outcome == hubcore.OutcomeSuccess {
			ok++
		}
	}
	var b bytes.Buffer
	b.WriteString(`<NotificationOutcome xmlns:i="` + NSInstance + `" xmlns="` + NSConnect + `">`)
	b.WriteString("<Success>" + strconv.Itoa(ok) + "</Success><Failure>" + strconv.Itoa(len(results)-ok) + "</Failure>")
	if len(results) == 0 {
		b.WriteString("<Results />")
	} else {
		b.WriteString("<Results>")
		for _, r := range results {
			b.WriteString("<RegistrationResult><ApplicationPlatform>")
			escape(&b, FormatName(r.Platform))
			b.WriteString("</ApplicationPlatform><PnsHandle>")
			escape(&b, r.Handle)
			b.WriteString("</PnsHandle><RegistrationId>")
			escape(&b, r.RegistrationID)
			b.WriteString("</RegistrationId><Outcome>")
			escape(&b, OutcomeText(r))
			b.WriteString("</Outcome></RegistrationResult>")
		}
		b.WriteString("</Results>")
	}
	b.WriteString("</NotificationOutcome>")
	return b.Bytes()
}

// countsElements lists the per-platform outcome-count elements in the .NET
// DataContract order (Mpns and legacy Fcm have no pushgate platform), with
// the position of PnsErrorDetailsUri between Adm and FcmV1.
var countsElements = []struct {
	platform hubcore.Platform
	name     string
}{
	{hubcore.APNS, "ApnsOutcomeCounts"},
	{hubcore.WNS, "WnsOutcomeCounts"},
	{hubcore.GCM, "GcmOutcomeCounts"},
	{hubcore.ADM, "AdmOutcomeCounts"},
	{"", "PnsErrorDetailsUri"},
	{hubcore.FCMV1, "FcmV1OutcomeCounts"},
	{hubcore.Baidu, "BaiduOutcomeCounts"},
	{hubcore.Browser, "BrowserOutcomeCounts"},
	{hubcore.Xiaomi, "XiaomiOutcomeCounts"},
}

// DetailsOptions carries what NotificationDetails needs beyond the outcome.
type DetailsOptions struct {
	// Location is the notification's URL,
	// https://{host}/{hub}/messages/{id}?api-version=…
	Location string
	// PnsErrorDetailsURI, when not "", is emitted as PnsErrorDetailsUri:
	// a link to per-handle PNS errors.
	PnsErrorDetailsURI string
}

// detailsTime is the .NET DateTime round-trip form in UTC, trailing zeros
// of the fraction dropped.
func detailsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.9999999Z") }

// EncodeNotificationDetails writes the per-message telemetry document in
// the .NET DataContract order: NotificationId, Location, State, EnqueueTime,
// StartTime, EndTime, NotificationBody, Tags, TargetPlatforms, the
// *OutcomeCounts blocks (only for platforms with counts) with
// PnsErrorDetailsUri in its slot. Empty values and zero times are left out
// (every child is optional to clients). State is the fanout state, whose
// names are the service's ("Cancelled" with two l's, which .NET parses).
// Outcomes within a block are sorted by name. TargetPlatforms lists the
// platforms with counts; before any part has run it is the send's format
// (the template format has no single platform, so it is "template").
func EncodeNotificationDetails(o *fanout.Outcome, opt DetailsOptions) []byte {
	var b bytes.Buffer
	b.WriteString(`<NotificationDetails xmlns="` + NSConnect + `" xmlns:i="` + NSInstance + `">`)
	leaf(&b, "NotificationId", o.ID)
	leaf(&b, "Location", opt.Location)
	leaf(&b, "State", string(o.State))
	for _, t := range []struct {
		name string
		t    time.Time
	}{{"EnqueueTime", o.Enqueued}, {"StartTime", o.Started}, {"EndTime", o.Ended}} {
		if !t.t.IsZero() {
			leaf(&b, t.name, detailsTime(t.t))
		}
	}
	var targets []string
	for _, c := range countsElements {
		if c.platform != "" && len(o.Counts[c.platform]) > 0 {
			targets = append(targets, FormatName(c.platform))
		}
	}
	if o.Spec != nil {
		leaf(&b, "NotificationBody", string(o.Spec.Body))
		leaf(&b, "Tags", o.Spec.Expr)
		if len(targets) == 0 {
			targets = []string{string(o.Spec.Format)}
		}
	}
	leaf(&b, "TargetPlatforms", strings.Join(targets, ","))
	for _, c := range countsElements {
		if c.platform == "" {
			leaf(&b, c.name, opt.PnsErrorDetailsURI)
			continue
		}
		m := o.Counts[c.platform]
		if len(m) == 0 {
			continue
		}
		names := make([]string, 0, len(m))
		for n := range m {
			names = append(names, string(n))
		}
		sort.Strings(names)
		b.WriteString("<" + c.name + ">")
		for _, n := range names {
			b.WriteString("<Outcome><Name>")
			escape(&b, n)
			b.WriteString("</Name><Count>" + strconv.FormatInt(m[hubcore.OutcomeName(n)], 10) + "</Count></Outcome>")
		}
		b.WriteString("</" + c.name + ">")
	}
	b.WriteString("</NotificationDetails>")
	return b.Bytes()
}

// EncodePnsFeedback writes one PnsFeedback document in the .NET
// DataContract order: FeedbackTime, NotificationSystemError, Platform,
// PnsHandle, then RegistrationId, InstallationId and NotificationId when
// known. pushgate learns of no new handles, so NewPnsHandle never appears.
// The service's blobs declare UTF-16; this is UTF-8, without a declaration.
func EncodePnsFeedback(ev hubcore.FeedbackEvent) []byte {
	var b bytes.Buffer
	b.WriteString(`<PnsFeedback xmlns:i="` + NSInstance + `" xmlns="` + NSConnect + `">`)
	b.WriteString("<FeedbackTime>" + ev.Time.UTC().Format("2006-01-02T15:04:05.000Z") + "</FeedbackTime>")
	b.WriteString("<NotificationSystemError>")
	escape(&b, string(ev.Outcome))
	b.WriteString("</NotificationSystemError><Platform>")
	escape(&b, FormatName(ev.Platform))
	b.WriteString("</Platform><PnsHandle>")
	escape(&b, ev.Handle)
	b.WriteString("</PnsHandle>")
	leaf(&b, "RegistrationId", ev.RegistrationID)
	leaf(&b, "InstallationId", ev.InstallationID)
	leaf(&b, "NotificationId", ev.NotificationID)
	b.WriteString("</PnsFeedback>")
	return b.Bytes()
}
