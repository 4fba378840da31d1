// Package fanout turns a send into deliveries, across every replica of a hub
// that shares one Broker: a send is cut into parts (AudienceQuery.Part),
// each part is a job on the broker's queue, and every replica's workers
// claim jobs, resolve their part of the audience from the store, render,
// de-duplicate per handle, pace per credential, hand the deliveries to the
// platform senders with retries, and commit the part's outcome counts once.
// A replica that dies mid-part leaves its job to be reclaimed by another.
package fanout
