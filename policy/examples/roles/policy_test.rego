package pushgate_test

import data.pushgate

req(roles, tags) := {
	"user": {"sub": "s-alice", "user_id": "alice", "iss": "https://id.example", "claims": {"roles": roles}},
	"operation": "create",
	"resource": "installation",
	"request": {"installationId": "i1", "platform": "fcmv1", "tags": tags},
	"stored": null,
	"requested_tags": tags,
}

test_holder_keeps_role_tags if {
	d := pushgate.decision with input as req(["beta", "staff"], ["role:beta", "role:Staff", "event:x"])
	d.allow
	d.keep == {"role:beta", "role:Staff", "event:x"}
}

test_non_holder_is_denied if {
	d := pushgate.decision with input as req(["beta"], ["role:beta", "role:staff"])
	not d.allow
	"tag role:staff needs role staff, which the user does not hold" in d.reasons
}

test_missing_claim_denies_role_tags if {
	inp := json.remove(req([], ["role:beta"]), ["user/claims/roles"])
	d := pushgate.decision with input as inp
	not d.allow
}

test_space_separated_claim if {
	d := pushgate.decision with input as req("beta staff", ["role:staff"])
	d.allow
	d.keep == {"role:staff"}
}

test_other_tags_dropped if {
	d := pushgate.decision with input as req(["beta"], ["topic:x", "userId:bob", "lang:fr"])
	d.allow
	d.keep == {"lang:fr"}
	d.inject == ["userId:alice"]
}

test_empty_role_name_is_denied if {
	d := pushgate.decision with input as req(["beta"], ["role:"])
	not d.allow
}
