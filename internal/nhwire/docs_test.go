package nhwire

import (
	"bytes"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
	"github.com/pushgate/pushgate/hubcore/fanout"
	"github.com/pushgate/pushgate/hubcore/payload"
)

func TestEncodeErrorGolden(t *testing.T) {
	detail := ErrorDetail("Installation not found.", "6b2f_G3", time.Date(2024, 1, 2, 10, 11, 12, 0, time.UTC))
	if got, want := EncodeError(404, detail), readGolden(t, "error.xml"); !bytes.Equal(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if got := string(EncodeError(401, "a<b&c")); got != "<Error><Code>401</Code><Detail>a&lt;b&amp;c</Detail></Error>" {
		t.Fatal(got)
	}
}

func TestFormatName(t *testing.T) {
	want := map[hubcore.Platform]string{hubcore.APNS: "apple", hubcore.FCMV1: "fcmv1", hubcore.GCM: "gcm", hubcore.WNS: "windows",
		hubcore.ADM: "adm", hubcore.Baidu: "baidu", hubcore.Browser: "browser", hubcore.Xiaomi: "xiaomi"}
	for _, p := range hubcore.Platforms {
		if FormatName(p) != want[p] {
			t.Errorf("%s: %s", p, FormatName(p))
		}
		// The name is a send format pushgate understands.
		if _, err := payload.ParseFormat(FormatName(p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestEncodeNotificationOutcomeGolden(t *testing.T) {
	got := EncodeNotificationOutcome([]fanout.TestResult{
		{Platform: hubcore.APNS, Handle: "AB12", RegistrationID: "4411-9982-1", Outcome: hubcore.OutcomeSuccess},
		{Platform: hubcore.FCMV1, Handle: "tok", RegistrationID: "inst~a", Outcome: hubcore.OutcomeBadChannel, Detail: "UNREGISTERED"},
		{Platform: hubcore.WNS, Handle: "https://wns/?a=1&b=2", RegistrationID: "1-2-3", Outcome: hubcore.OutcomePnsUnavailable, Detail: "HTTP 503 <busy>"},
	})
	if want := readGolden(t, "outcome.xml"); !bytes.Equal(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if got, want := EncodeNotificationOutcome(nil), readGolden(t, "outcome_empty.xml"); !bytes.Equal(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	for o, want := range map[hubcore.OutcomeName]string{
		hubcore.OutcomeExpiredChannel: outcomeExpired, hubcore.OutcomeWrongToken: outcomeInvalid,
		hubcore.OutcomeInvalidCredentials: outcomeToken, hubcore.OutcomeThrottled: "Throttled",
	} {
		if got := OutcomeText(fanout.TestResult{Outcome: o}); got != want {
			t.Errorf("%s: %s", o, got)
		}
	}
}

func TestEncodeNotificationDetailsGolden(t *testing.T) {
	t0 := time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	id := "5d0c-20240501120000-1-7"
	o := &fanout.Outcome{
		ID: id, State: fanout.Completed, Enqueued: t0,
		Started: t0.Add(120 * time.Millisecond), Ended: t0.Add(1500 * time.Millisecond),
		Counts: fanout.Counts{
			hubcore.APNS:    {hubcore.OutcomeSuccess: 12, hubcore.OutcomeExpiredChannel: 1},
			hubcore.FCMV1:   {hubcore.OutcomeSuccess: 30},
			hubcore.WNS:     {hubcore.OutcomeSuccess: 2},
			hubcore.Browser: {hubcore.OutcomeSkipped: 4},
			hubcore.GCM:     {},
		},
		Spec: &fanout.Spec{ID: id, Format: payload.Apple, Body: []byte(`{"aps":{"alert":"a < b & c"}}`), Expr: "sports && !lang_fr"},
	}
	got := EncodeNotificationDetails(o, DetailsOptions{
		Location:           "https://localhost:8443/hub/messages/" + id + "?api-version=2020-06",
		PnsErrorDetailsURI: "https://blob/x?sig=1&se=2",
	})
	if want := readGolden(t, "details.xml"); !bytes.Equal(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	o = &fanout.Outcome{ID: "n1", State: fanout.Cancelled, Enqueued: t0,
		Spec: &fanout.Spec{Format: payload.Template, Body: []byte(`{"msg":"hi"}`), Broadcast: true}}
	if got, want := EncodeNotificationDetails(o, DetailsOptions{}), readGolden(t, "details_cancelled.xml"); !bytes.Equal(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}

func TestEncodePnsFeedbackGolden(t *testing.T) {
	got := EncodePnsFeedback(hubcore.FeedbackEvent{
		Time: time.Date(2024, 5, 1, 12, 0, 1, 234e6, time.UTC), Outcome: hubcore.OutcomeExpiredChannel, Reason: "Unregistered",
		Platform: hubcore.APNS, Handle: "AB12", RegistrationID: "4411-9982-1", NotificationID: "5d0c-20240501120000-1-7",
	})
	if want := readGolden(t, "feedback.xml"); !bytes.Equal(got, want) {
		t.Fatalf("got %s\nwant %s", got, want)
	}
}
