# Tenant isolation: the token's "tenant" claim names the user's tenant t.
# Tags written are confined to the tenant: only tenant:{t}:* tags are kept,
# tenant:{t} and the tenant-scoped user tag tenant:{t}:userId:{user} are
# injected (user ids are unique within a tenant only), and a tag that names
# another tenant is denied. Tags outside the tenant: namespace are dropped.
package pushgate

default decision := {
	"allow": false,
	"reasons": ["no tenant: the token has no usable tenant claim"],
	"keep": [],
	"inject": [],
	"user_id": "",
}

tenant := input.user.claims.tenant

# A tenant name with ':' would make prefixes ambiguous (tenant "a:b" would
# own tags of tenant "a"), so only plain names are accepted.
valid_tenant if {
	is_string(tenant)
	regex.match(`^[A-Za-z0-9_@#.-]{1,64}$`, tenant)
}

prefix := concat("", ["tenant:", lower(tenant), ":"])

tenant_tag := concat("", ["tenant:", tenant])

user_tag := concat("", ["tenant:", tenant, ":userId:", input.user.user_id])

# The tenant a tag names: tenant:{x} or tenant:{x}:…
tag_tenant(t) := lower(split(t, ":")[1]) if startswith(lower(t), "tenant:")

keep contains t if {
	some t in input.requested_tags
	startswith(lower(t), prefix)
	not startswith(lower(substring(t, count(prefix), -1)), "userid:")
}

reasons contains sprintf("tag %s belongs to another tenant", [t]) if {
	some t in input.requested_tags
	tag_tenant(t) != lower(tenant)
}

# Tenant-scoped user tags are injected, never chosen by the device.
reasons contains sprintf("tag %s names another user", [t]) if {
	some t in input.requested_tags
	startswith(lower(t), concat("", [prefix, "userid:"]))
	lower(t) != lower(user_tag)
}

reasons contains "the installation belongs to another tenant" if {
	some t in input.stored.tags
	tag_tenant(t) != lower(tenant)
}

reasons contains "the installation belongs to another user" if {
	owner := input.stored.userId
	owner != ""
	lower(owner) != lower(input.user.user_id)
}

reasons contains "no user id: the token did not identify a user" if {
	input.user.user_id == ""
}

decision := {
	"allow": count(reasons) == 0,
	"reasons": reasons,
	"keep": keep,
	"inject": inject,
	"user_id": input.user.user_id,
} if {
	valid_tenant
}

inject := [tenant_tag, user_tag] if {
	input.user.user_id != ""
} else := [tenant_tag]
