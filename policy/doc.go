// Package policy wraps Open Policy Agent: Rego v1 policies compiled once
// into a prepared query that decides, per device request, which tags a user
// may register, which tags are injected (userId:{sub}) and which userId is
// set. Example policies and their Rego tests live in policy/examples.
//
// The input a policy sees is shaped by hubcore: the parsed installation or
// registration in its Notification Hubs JSON shape, and for a patch the
// hubcore.PatchOp list with each operation's target, so "does this touch
// tags?" is a field rather than a path to re-parse. InputFor and
// RegistrationInputFor build it.
//
// # Input document
//
//	{
//	  "user": {"sub": "…", "user_id": "…", "iss": "…", "claims": {…}},
//	  "operation": "create" | "replace" | "patch" | "delete" | "read",
//	  "resource": "installation" | "registration",
//	  "request": {…installation or registration as it would be stored…} | null,
//	  "patch": [{"op": "add", "path": "/tags", "target": "tags", "touches_tags": true,
//	             "template": "…", "tag": "…", "variable": "…", "value": …}],
//	  "stored": {…currently stored record…} | null,
//	  "requested_tags": ["…"]
//	}
//
// # Decision document
//
// The query (by default data.pushgate.decision) must produce an object:
//
//	{"allow": bool, "reasons": [string], "keep": [string], "inject": [string], "user_id": string}
//
// Every key is optional; a missing allow is false. Unknown keys and wrong
// types are errors, so a typo in a policy denies rather than silently
// dropping, say, the injected userId tag. Arrays may also be sets.
//
// # Failing closed
//
// An undefined decision denies with the reason "policy decision is
// undefined" and no error. An evaluation error (a conflict, a builtin error
// under strict builtin errors, a timeout) or a malformed decision denies and
// returns the error, so the caller can log and count it.
//
// # Loading and reloading
//
// Load reads a directory recursively: .rego modules and .json/.yaml/.yml
// data, the data placed under its directory path as opa does. Files named
// *_test.rego (Rego unit tests), input.json or *.input.json (sample inputs
// for EvalFile) and anything whose name starts with a dot are not served.
// Watch polls the directory and swaps in a recompiled query when it changes;
// a policy that does not compile is rejected and the previous one keeps
// serving. Policies run with a restricted set of builtins: no http.send, no
// net.lookup_ip_addr and no opa.runtime, so a decision never reaches the
// network or reads the process environment.
package policy
