package hubcore

import (
	"fmt"
	"time"
)

// OutcomeName names what happened to one delivery, with Notification Hubs'
// outcome names, so that outcome counts read the same as the service's
// per-message telemetry.
type OutcomeName string

// Outcome names. All but the last three are Notification Hubs' own.
const (
	OutcomeSuccess                 OutcomeName = "Success"
	OutcomeSkipped                 OutcomeName = "Skipped" // the handle already received this send
	OutcomeExpiredChannel          OutcomeName = "ExpiredChannel"
	OutcomeBadChannel              OutcomeName = "BadChannel"
	OutcomeWrongToken              OutcomeName = "WrongToken"
	OutcomeWrongChannel            OutcomeName = "WrongChannel"
	OutcomeInvalidNotificationSize OutcomeName = "InvalidNotificationSize"
	OutcomeInvalidCredentials      OutcomeName = "InvalidCredentials"
	OutcomeThrottled               OutcomeName = "Throttled"
	OutcomeChannelThrottled        OutcomeName = "ChannelThrottled"
	OutcomeChannelDisconnected     OutcomeName = "ChannelDisconnected"
	OutcomeDropped                 OutcomeName = "Dropped"
	OutcomePnsServerError          OutcomeName = "PnsServerError"
	OutcomePnsUnavailable          OutcomeName = "PnsUnavailable"
	OutcomePnsUnreachable          OutcomeName = "PnsUnreachable"
	OutcomePnsInterfaceError       OutcomeName = "PnsInterfaceError"
	OutcomeAbandoned               OutcomeName = "AbandonedNotificationMessages"
	OutcomeUnknownError            OutcomeName = "UnknownError"
	// OutcomeInvalidPayload: the target's template did not render to a
	// payload its service accepts (pushgate's name; the service has none).
	OutcomeInvalidPayload OutcomeName = "InvalidPayload"
	// OutcomeNoCredentials: the hub has no credential for the platform.
	OutcomeNoCredentials OutcomeName = "NoCredentials"
	// OutcomeUnsupported: the platform has no sender in pushgate.
	OutcomeUnsupported OutcomeName = "UnsupportedPlatform"
)

// PushError is a push service's refusal of one delivery, classified so that
// the fan-out engine knows what to do next without knowing the service:
// retry (Retry, after RetryAfter when the service said so), take the handle
// out of every audience (ExpireHandle), or count it and move on.
//
// Senders return *PushError for every answer of the service other than
// success; any other error (a transport failure, a timeout) is treated as
// OutcomePnsUnreachable and retried.
type PushError struct {
	Outcome OutcomeName
	// Status is the service's HTTP status; 0 when no response arrived.
	Status int
	// Reason is the service's own reason ("Unregistered", "UNREGISTERED").
	Reason string
	// Retry says the same delivery may succeed later (429, 5xx, timeouts).
	Retry bool
	// RetryAfter is the service's Retry-After, or 0.
	RetryAfter time.Duration
	// ExpireHandle says the handle is gone for good.
	ExpireHandle bool
	// Err is the underlying transport error, if any.
	Err error
}

func (e *PushError) Error() string {
	s := string(e.Outcome)
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.Status)
		if e.Reason != "" {
			s += " " + e.Reason
		}
		s += ")"
	} else if e.Reason != "" {
		s += " (" + e.Reason + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *PushError) Unwrap() error { return e.Err }

// FeedbackEvent records that a push service rejected a handle for good: what
// the PNS feedback listing returns.
type FeedbackEvent struct {
	Time           time.Time   `json:"time"`
	Outcome        OutcomeName `json:"outcome"`
	Reason         string      `json:"reason,omitempty"`
	Platform       Platform    `json:"platform"`
	Handle         string      `json:"pnsHandle"`
	RegistrationID string      `json:"registrationId,omitempty"`
	InstallationID string      `json:"installationId,omitempty"`
	NotificationID string      `json:"notificationId,omitempty"`
}
