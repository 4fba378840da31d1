# Public topics: a device may subscribe to the topics in the catalog
# (data.json, so the list changes without touching Rego); any other tag,
# including another user's userId tag, is dropped rather than denied, so old
# app versions asking for retired topics keep working.
package pushgate

default decision := {
	"allow": false,
	"reasons": ["no user id: the token did not identify a user"],
	"keep": [],
	"inject": [],
	"user_id": "",
}

# A set of folded names: membership is a lookup, not a scan.
public_topics := {lower(t) | some t in data.catalog.public_topics}

keep contains t if {
	some t in input.requested_tags
	lower(t) in public_topics
}

reasons contains "the installation belongs to another user" if {
	owner := input.stored.userId
	owner != ""
	lower(owner) != lower(input.user.user_id)
}

decision := {
	"allow": count(reasons) == 0,
	"reasons": reasons,
	"keep": keep,
	"inject": [concat("", ["userId:", input.user.user_id])],
	"user_id": input.user.user_id,
} if {
	input.user.user_id != ""
}
