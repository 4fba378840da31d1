package brokertest

import (
	"fmt"
	"reflect"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// FeedbackEvent returns a feedback event with every field set from i.
func FeedbackEvent(i int) hubcore.FeedbackEvent {
	outcomes := []hubcore.OutcomeName{hubcore.OutcomeExpiredChannel, hubcore.OutcomeBadChannel, hubcore.OutcomeWrongToken}
	platforms := []hubcore.Platform{hubcore.APNS, hubcore.FCMV1, hubcore.WNS, hubcore.Browser}
	return hubcore.FeedbackEvent{
		Time:           Base.Add(time.Duration(i)*time.Millisecond + time.Duration(i)),
		Outcome:        outcomes[i%len(outcomes)],
		Reason:         fmt.Sprintf("reason %d", i),
		Platform:       platforms[i%len(platforms)],
		Handle:         fmt.Sprintf("handle-%d", i),
		RegistrationID: fmt.Sprintf("reg-%d", i),
		InstallationID: fmt.Sprintf("inst-%d", i%7),
		NotificationID: fmt.Sprintf("n-%d", i%3),
	}
}

func feedbackEqual(a, b hubcore.FeedbackEvent) bool {
	if !a.Time.Equal(b.Time) {
		return false
	}
	a.Time, b.Time = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

// readFeedback pages through the feedback from cursor with limit.
func (h *harness) readFeedback(cursor string, limit int) []hubcore.FeedbackEvent {
	h.t.Helper()
	var all []hubcore.FeedbackEvent
	for pages := 0; ; pages++ {
		if pages > 100_000 {
			h.t.Fatal("Feedback paging does not end")
		}
		evs, next, err := h.b.Feedback(h.ctx, cursor, limit)
		if err != nil {
			h.t.Fatalf("Feedback(%q, %d): %v", cursor, limit, err)
		}
		if len(evs) > limit {
			h.t.Fatalf("Feedback(limit %d) returned %d", limit, len(evs))
		}
		all = append(all, evs...)
		if next == "" {
			return all
		}
		if len(evs) == 0 {
			h.t.Fatalf("an empty page with next %q", next)
		}
		cursor = next
	}
}

func (h *harness) wantFeedback(what string, got []hubcore.FeedbackEvent, from, to int) {
	h.t.Helper()
	if len(got) != to-from {
		h.t.Fatalf("%s: %d events, want %d", what, len(got), to-from)
	}
	for i, ev := range got {
		if want := FeedbackEvent(from + i); !feedbackEqual(ev, want) {
			h.t.Fatalf("%s: event %d is %+v, want %+v", what, i, ev, want)
		}
	}
}

func (h *harness) addFeedback(from, to int) {
	h.t.Helper()
	var evs []hubcore.FeedbackEvent
	for i := from; i < to; i++ {
		evs = append(evs, FeedbackEvent(i))
	}
	if err := h.b.AddFeedback(h.ctx, evs); err != nil {
		h.t.Fatalf("AddFeedback: %v", err)
	}
}

func testFeedback(h *harness) {
	if evs, next, err := h.b.Feedback(h.ctx, "", 10); err != nil || len(evs) != 0 || next != "" {
		h.t.Fatalf("empty feedback: %v %q %v", evs, next, err)
	}
	if err := h.b.AddFeedback(h.ctx, nil); err != nil {
		h.t.Fatalf("AddFeedback(nil): %v", err)
	}
	h.addFeedback(0, 100)
	h.addFeedback(100, 200)
	h.addFeedback(200, 250)
	h.wantFeedback("pages of 7", h.readFeedback("", 7), 0, 250)
	h.wantFeedback("pages of 250", h.readFeedback("", 250), 0, 250)
	h.wantFeedback("one page", h.readFeedback("", 1000), 0, 250)

	evs, next, err := h.b.Feedback(h.ctx, "", 0)
	if err != nil || len(evs) != hubcore.DefaultPageSize || next == "" {
		h.t.Fatalf("limit 0: %d events, next %q, %v; want a page of %d", len(evs), next, err, hubcore.DefaultPageSize)
	}
	// A cursor stays valid while events are added; nothing is lost or
	// repeated.
	first, next, err := h.b.Feedback(h.ctx, "", 7)
	if err != nil || len(first) != 7 || next == "" {
		h.t.Fatalf("first page: %d, %q, %v", len(first), next, err)
	}
	h.addFeedback(250, 260)
	h.wantFeedback("continued after more were added", h.readFeedback(next, 9), 7, 260)
}

func testFeedbackInvalid(h *harness) {
	h.addFeedback(0, 3)
	_, _, err := h.b.Feedback(h.ctx, "", -1)
	wantCode(h.t, "Feedback(limit -1)", err, hubcore.CodeInvalid)
	for _, c := range []string{"garbage", "-", "1-", "{}", "../x"} {
		_, _, err := h.b.Feedback(h.ctx, c, 10)
		wantCode(h.t, fmt.Sprintf("Feedback(cursor %q)", c), err, hubcore.CodeInvalid)
	}
}
