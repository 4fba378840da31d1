# Per-user tags: every installation carries its owner's userId tag, and a
# device may add only event:* and lang:* tags. Asking for another user's
# userId tag is an attack (it would receive that user's notifications), so
# it is denied rather than silently dropped.
package pushgate

# The one producer of a non-default decision is the rule at the bottom;
# a complete rule with one body cannot conflict.
default decision := {
	"allow": false,
	"reasons": ["no user id: the token did not identify a user"],
	"keep": [],
	"inject": [],
	"user_id": "",
}

# Prefixes, lower case: tags compare case-insensitively.
allowed_prefixes := {"event:", "lang:"}

user_tag := concat("", ["userId:", input.user.user_id])

requested contains t if some t in input.requested_tags

keep contains t if {
	some t in requested
	some p in allowed_prefixes
	startswith(lower(t), p)
}

# A userId tag of another user, in any case.
foreign_user_tags contains t if {
	some t in requested
	startswith(lower(t), "userid:")
	lower(t) != lower(user_tag)
}

reasons contains sprintf("tag %s names another user", [t]) if some t in foreign_user_tags

# The stored record belongs to someone else: neither overwrite nor delete it.
reasons contains "the installation belongs to another user" if {
	owner := input.stored.userId
	owner != ""
	lower(owner) != lower(input.user.user_id)
}

decision := {
	"allow": count(reasons) == 0,
	"reasons": reasons,
	"keep": keep,
	"inject": [user_tag],
	"user_id": input.user.user_id,
} if {
	input.user.user_id != ""
}
