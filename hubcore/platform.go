package hubcore

import "strings"

// Platform is a push notification service, by its Notification Hubs name.
type Platform string

// The platforms an installation or registration may target.
const (
	APNS    Platform = "apns"
	FCMV1   Platform = "fcmv1"
	GCM     Platform = "gcm" // FCM legacy; retired by Google, kept for old clients
	WNS     Platform = "wns"
	ADM     Platform = "adm"
	Baidu   Platform = "baidu"
	Browser Platform = "browser"
	Xiaomi  Platform = "xiaomi"
)

// Platforms lists every platform in a stable order.
var Platforms = []Platform{APNS, FCMV1, GCM, WNS, ADM, Baidu, Browser, Xiaomi}

// ParsePlatform reads a platform name the way the SDKs write it: any case,
// with "fcm" meaning the legacy GCM protocol as the .NET and Java SDKs do.
func ParsePlatform(s string) (Platform, error) {
	switch p := Platform(strings.ToLower(strings.TrimSpace(s))); p {
	case APNS, FCMV1, GCM, WNS, ADM, Baidu, Browser, Xiaomi:
		return p, nil
	case "fcm":
		return GCM, nil
	case "mpns":
		return "", unsupported("platform", "mpns (Windows Phone) is retired and not supported")
	case "":
		return "", invalid("platform", "platform is required")
	default:
		return "", invalid("platform", "unknown platform %q (want one of apns, fcmv1, gcm, wns, adm, baidu, browser, xiaomi)", s)
	}
}

// UsesXML reports whether the platform's payloads are XML documents.
func (p Platform) UsesXML() bool { return p == WNS }
