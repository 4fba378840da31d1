// Package policy wraps Open Policy Agent: Rego v1 policies compiled once
// into a prepared query that decides, per device request, which tags a user
// may register, which tags are injected (userId:{sub}) and which userId is
// set. Example policies and their Rego tests live in policy/examples.
//
// Not built yet: it arrives with the gatekeeper issue (#4). The input it
// will see is shaped by hubcore: the parsed installation or registration,
// and for a patch the hubcore.PatchOp list with each operation's Target.
package policy
