// Package redisstore is the Redis implementation of hubcore.Store: the
// production registry of installations and registrations and the tag
// index that turns tag expressions into audiences.
//
// It runs on a standalone server, Sentinel or Redis Cluster (one
// redis.UniversalOptions decides), needs Redis 7.0 (EVALSHA_RO-era Lua with
// the struct and bit libraries, LPOP with a count), and is laid out so that
// a million installations with a handful of tags and a template each take
// about 300 bytes of Redis memory apiece, index included (see
// docs/BENCHMARKS.md).
//
// # Shards
//
// A hub is split into Shards index shards (16 by default, fixed when the hub
// is created and recorded in {pg:<hub>}:cfg). Every key of shard s starts
// with the hash tag {pg:<hub>:<s>}, so one shard lives in one cluster slot
// and its write script may touch any of its keys; shards spread over the
// cluster's primaries. An installation lives entirely in shard
// hash(InstallationKey) mod Shards, a stored registration in
// hash(RegistrationID) mod Shards. Audiences are resolved shard by shard
// and merged in Go: every record is in exactly one shard.
//
// # Records
//
// Within its shard a record has an integer id, its iid, allocated from the
// shard's counter (in blocks, to save round trips) or from the list of ids
// freed by deletes. Records are packed (record.go: varints, GUID-shaped ids
// as 16 bytes, APNs tokens as binary, template references as 8-byte content
// hashes) and kept 32 to a hash, field = iid mod 32, so that the buckets
// stay compact listpacks; a record too big for a listpack value (over 1 KB)
// is kept in its own string key with a marker in its bucket. Key names, per
// shard, after the {pg:<hub>:<s>} prefix:
//
//	:m          HASH  n (records), nx (next unallocated iid)
//	:r:<b>      HASH  record bucket b: iid mod 32 -> packed record
//	:R:<iid>    STRING a spilled record
//	:i:<b>      HASH  id map: 6-byte hash of the id -> iid (comma list on collision)
//	:h:<b>      HASH  handle map: 6-byte hash of the upper-cased handle key -> iids
//	:u          STRING bitmap of the live iids (the universe)
//	:tp, :tr    HASH  template contents and reference counts by 8-byte hash
//	:x          HASH  record bucket -> earliest expiration (ms), for the sweeper
//	:g          HASH  registration id -> issued or gone marker with its time
//	:f          LIST  freed iids
//	:s:<b>      HASH  tag index tier 1: 6-byte tag hash -> packed uint32 iids
//	:t:<hash>   SET   tag index tier 2: iids (an intset)
//	:b:<hash>   STRING tag index tier 3: bitmap over iids
//	:c          HASH  8-byte tag hash -> count, for tags in tiers 2 and 3
//
// Ids, handles and tags are hashed (xxhash64) so that bucket fields are six
// bytes whatever their length; a hash only finds candidates, which are
// then checked against the records, so collisions cost a comparison, never
// a wrong answer. Templates are content-addressed: apps put the same few
// templates on every device, so a record carries 8 bytes per template; a
// hash collision between different contents is detected by the write
// script and the template is then stored inline in the record.
//
// # The tag index
//
// A record is indexed under its IndexTags (its registrations' tags: own
// tags, $UserId, template tags and names), except $InstallationId:{…},
// which is resolved by looking the installation up. Each tag's entries in a
// shard are in exactly one of three tiers, chosen by count: up to 16
// members packed in a field of a bucketed hash (most tags are a user's and
// have one to three devices: a field costs ~15 bytes where a key would
// cost ~80), up to 512 in an intset, beyond that a bitmap over iids (one
// bit per record of the shard, cheaper than 4 bytes a member once 1 record
// in 32 carries the tag). Tags move between tiers, with hysteresis, inside
// the write script.
//
// # Writes
//
// Every write of a record goes through one Lua script with all its keys in
// KEYS, conditional on the record bytes and the id-map entry being exactly
// what the client read (a compare-and-set on content, which also defeats
// iid reuse). The client computes the new record and the differences
// (index tags added and removed, handle, template references); the script
// checks, applies everything or nothing, and moves tags between tiers.
// UpdateInstallation re-reads and retries when the compare-and-set fails,
// so concurrent patches never lose an update.
//
// # Resolution
//
// Resolve and Count execute the tagexpr plan (see that package's contract)
// in every shard. For a step, a read-only script returns, as one snapshot,
// a chunk of the driver's members (at most 64 Ki iids: a slice of its
// bitmap, or its packed list or intset) together with the index entries of
// the other tags the expression reads. The client prunes candidates with
// the expression in three-valued logic (a tag a record lacks is false; one
// it carries is unknown, since it may be on some of its registrations
// only) and skips those carrying an earlier step's driver; only then are
// records fetched, whole buckets (HVALS) when dense, single slots (HMGET)
// otherwise. Each record is expanded into its registrations, each matched
// exactly against its own tags. The first chunk of every shard is read in
// one pipeline, and when candidates are few their records are read in one
// more, so a selective send costs three round trips whatever the shard
// count; large audiences stream per shard, several shards at a time. No
// step materialises a union or intersection in Redis, and no command works
// on more than a chunk.
//
// # Consistency and expiry
//
// All reads and writes go to primaries (read-your-writes). Expired entries
// are absent to every read at once; Sweep (or Options.SweepInterval)
// deletes them, visiting only buckets whose earliest expiration passed.
// Check verifies every invariant of a hub and is meant for tests and an
// offline fsck.
//
// # Server configuration
//
// New raises hash-max-listpack-value to 1024 (from Redis's default of 64)
// when it is lower and CONFIG is allowed, so that record buckets stay
// listpacks; Options.NoConfig turns this off. On a server that refuses,
// everything works, and each record costs about 50 bytes more. The other
// encodings rely on Redis's defaults: hash-max-listpack-entries ≥ 128 and
// set-max-intset-entries ≥ 512.
package redisstore
