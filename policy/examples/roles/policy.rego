# Role tags: role:{name} may be held only by users whose token lists the
# role in its "roles" claim (an array, or a space-separated string as some
# identity providers send it). Asking for a role one does not hold is
# denied: it is an attempt to receive staff-only messages. Other tags are
# kept under the event:/lang: prefixes and dropped otherwise.
package pushgate

default decision := {
	"allow": false,
	"reasons": ["no user id: the token did not identify a user"],
	"keep": [],
	"inject": [],
	"user_id": "",
}

allowed_prefixes := {"event:", "lang:"}

# The user's roles, folded; empty when the claim is absent or malformed.
roles contains lower(r) if {
	is_array(input.user.claims.roles)
	some r in input.user.claims.roles
	is_string(r)
}

roles contains lower(r) if {
	is_string(input.user.claims.roles)
	some r in split(input.user.claims.roles, " ")
	r != ""
}

role_of(t) := substring(t, 5, -1) if startswith(lower(t), "role:")

keep contains t if {
	some t in input.requested_tags
	role_of(t) != ""
	lower(role_of(t)) in roles
}

keep contains t if {
	some t in input.requested_tags
	some p in allowed_prefixes
	startswith(lower(t), p)
}

reasons contains sprintf("tag %s needs role %s, which the user does not hold", [t, role_of(t)]) if {
	some t in input.requested_tags
	startswith(lower(t), "role:")
	not lower(role_of(t)) in roles
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
