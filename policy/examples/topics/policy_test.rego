package pushgate_test

import data.pushgate

req(tags) := {
	"user": {"sub": "s-alice", "user_id": "alice", "iss": "https://id.example", "claims": {}},
	"operation": "create",
	"resource": "installation",
	"request": {"installationId": "i1", "platform": "apns", "tags": tags},
	"stored": null,
	"requested_tags": tags,
}

test_keeps_catalog_topics if {
	d := pushgate.decision with input as req(["topic:news", "Topic:Sports"])
	d.allow
	d.keep == {"topic:news", "Topic:Sports"}
}

test_drops_unknown_tags_without_denying if {
	d := pushgate.decision with input as req(["topic:news", "topic:secret", "userId:bob", "vip"])
	d.allow
	d.keep == {"topic:news"}
}

test_injects_user_tag if {
	d := pushgate.decision with input as req([])
	d.inject == ["userId:alice"]
	d.user_id == "alice"
}

test_catalog_comes_from_data if {
	d := pushgate.decision with input as req(["topic:secret"])
		with data.catalog.public_topics as ["topic:secret"]
	d.keep == {"topic:secret"}
}

test_denies_someone_elses_installation if {
	inp := object.union(req([]), {"stored": {"installationId": "i1", "userId": "bob"}})
	d := pushgate.decision with input as inp
	not d.allow
}
