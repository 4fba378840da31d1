package pushgate_test

import data.pushgate

alice := {"sub": "s-alice", "user_id": "alice", "iss": "https://id.example", "claims": {}}

req(tags) := {
	"user": alice,
	"operation": "create",
	"resource": "installation",
	"request": {"installationId": "i1", "platform": "fcmv1", "tags": tags},
	"stored": null,
	"requested_tags": tags,
}

test_injects_user_tag_and_sets_user_id if {
	d := pushgate.decision with input as req([])
	d.allow
	d.inject == ["userId:alice"]
	d.user_id == "alice"
}

test_keeps_allowed_prefixes_only if {
	d := pushgate.decision with input as req(["event:comment", "Lang:en", "topic:news", "vip"])
	d.allow
	d.keep == {"event:comment", "Lang:en"}
}

test_own_user_tag_is_not_foreign if {
	d := pushgate.decision with input as req(["USERID:Alice"])
	d.allow
}

test_denies_other_users_tag if {
	d := pushgate.decision with input as req(["event:x", "userId:bob"])
	not d.allow
	"tag userId:bob names another user" in d.reasons
}

test_denies_other_users_tag_in_any_case if {
	d := pushgate.decision with input as req(["USERID:bob"])
	not d.allow
}

test_denies_someone_elses_installation if {
	inp := object.union(req([]), {"operation": "delete", "request": null, "stored": {"installationId": "i1", "userId": "bob"}})
	d := pushgate.decision with input as inp
	not d.allow
	"the installation belongs to another user" in d.reasons
}

test_allows_own_stored_installation if {
	inp := object.union(req(["event:x"]), {"operation": "replace", "stored": {"installationId": "i1", "userId": "alice"}})
	d := pushgate.decision with input as inp
	d.allow
}

test_denies_without_user_id if {
	inp := object.union(req(["event:x"]), {"user": {"sub": "s", "user_id": "", "iss": "", "claims": {}}})
	d := pushgate.decision with input as inp
	not d.allow
	d.inject == []
}
