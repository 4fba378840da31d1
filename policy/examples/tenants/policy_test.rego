package pushgate_test

import data.pushgate

req(tenant, tags) := {
	"user": {"sub": "s-alice", "user_id": "alice", "iss": "https://id.example", "claims": {"tenant": tenant}},
	"operation": "create",
	"resource": "installation",
	"request": {"installationId": "i1", "platform": "wns", "tags": tags},
	"stored": null,
	"requested_tags": tags,
}

test_keeps_own_tenant_tags_and_injects if {
	d := pushgate.decision with input as req("acme", ["tenant:acme:event:x", "TENANT:ACME:lang:en", "tenant:acme"])
	d.allow
	d.keep == {"tenant:acme:event:x", "TENANT:ACME:lang:en"}
	d.inject == ["tenant:acme", "tenant:acme:userId:alice"]
	d.user_id == "alice"
}

test_drops_untenanted_tags if {
	d := pushgate.decision with input as req("acme", ["event:x", "userId:bob"])
	d.allow
	d.keep == set()
}

test_denies_cross_tenant_tag if {
	d := pushgate.decision with input as req("acme", ["tenant:globex:event:x"])
	not d.allow
	"tag tenant:globex:event:x belongs to another tenant" in d.reasons
}

test_denies_other_tenant_tag_itself if {
	d := pushgate.decision with input as req("acme", ["tenant:globex"])
	not d.allow
}

test_denies_prefix_lookalike_tenant if {
	d := pushgate.decision with input as req("acme", ["tenant:acme2:event:x"])
	not d.allow
}

test_denies_other_users_tenant_user_tag if {
	d := pushgate.decision with input as req("acme", ["tenant:acme:userId:bob"])
	not d.allow
}

test_denies_missing_tenant if {
	# object.union merges recursively, so the claim is removed instead.
	inp := json.remove(req("acme", []), ["user/claims/tenant"])
	d := pushgate.decision with input as inp
	not d.allow
	d.reasons == ["no tenant: the token has no usable tenant claim"]
}

test_denies_tenant_with_colon if {
	d := pushgate.decision with input as req("acme:evil", ["tenant:acme:evil:x"])
	not d.allow
}

test_denies_other_tenants_installation if {
	inp := object.union(req("acme", []), {"stored": {"installationId": "i1", "tags": ["tenant:globex"]}})
	d := pushgate.decision with input as inp
	not d.allow
	"the installation belongs to another tenant" in d.reasons
}

test_denies_non_string_tenant if {
	d := pushgate.decision with input as req(["acme"], [])
	not d.allow
}
