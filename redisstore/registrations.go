package redisstore

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/pushgate/pushgate/hubcore"
)

func expiredAt(r *record, now time.Time) bool {
	return !r.expiration.IsZero() && !now.Before(r.expiration)
}

// Registration id markers, in the shard's registration-id hash: an id
// issued by NewRegistrationID, or one deleted or expired, with the time.
const (
	markIssued = 'i'
	markGone   = 'g'
)

func marker(kind byte, at time.Time) string {
	return string(kind) + strconv.FormatInt(at.UnixMilli(), 10)
}

// parseMarker returns the marker's kind and time; ok is false for "".
func parseMarker(m string) (kind byte, at time.Time, ok bool) {
	if len(m) < 2 {
		return 0, time.Time{}, false
	}
	ms, err := strconv.ParseInt(m[1:], 10, 64)
	if err != nil {
		return 0, time.Time{}, false
	}
	return m[0], time.UnixMilli(ms), true
}

// NewRegistrationID issues a fresh id and remembers it for
// RegistrationIDTTL.
func (s *Store) NewRegistrationID(ctx context.Context) (string, error) {
	id := hubcore.NewRegistrationID()
	sh := hashOf(hRegistration, id).shard(s.l.shards)
	if err := s.rdb.HSet(ctx, s.l.regIDs(sh), id, marker(markIssued, s.now())).Err(); err != nil {
		return "", unavailable(err)
	}
	return id, nil
}

func (s *Store) regMarker(ctx context.Context, sh int, id string) (string, error) {
	m, err := s.rdb.HGet(ctx, s.l.regIDs(sh), id).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return "", unavailable(err)
	}
	return m, nil
}

// goneUntil says whether id may not be written now: it was deleted, or
// its registration expired, less than RegistrationIDTTL ago.
func goneNow(sl *slot, m string, now time.Time) bool {
	if k, at, ok := parseMarker(m); ok && k == markGone && now.Before(at.Add(hubcore.RegistrationIDTTL)) {
		return true
	}
	return sl.rec != nil && expiredAt(sl.rec, now) && now.Before(sl.rec.expiration.Add(hubcore.RegistrationIDTTL))
}

// PutRegistration writes the registration at r.RegistrationID,
// conditional on cond.
func (s *Store) PutRegistration(ctx context.Context, r *hubcore.Registration, cond hubcore.Cond) (*hubcore.Registration, error) {
	if r == nil {
		return nil, invalid("", "no registration")
	}
	if err := hubcore.ValidateRegistrationID(r.RegistrationID); err != nil {
		return nil, err
	}
	if r.InstallationID != "" {
		return nil, invalid("RegistrationId", "registrations of an installation are changed through the installation")
	}
	id := r.RegistrationID
	inline := map[uint64]bool{}
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, hRegistration, id)
		if err != nil {
			return nil, err
		}
		m, err := s.regMarker(ctx, sl.sh, id)
		if err != nil {
			return nil, err
		}
		now := s.now()
		live := s.live(sl)
		var cur int64
		if live {
			cur = sl.rec.version
		} else {
			if goneNow(sl, m, now) {
				return nil, gone(id)
			}
			if cond.Version > 0 {
				return nil, conflict(0)
			}
			if cond.Exists {
				return nil, notFound("registration")
			}
			if cond.Issued {
				k, at, ok := parseMarker(m)
				if !ok || k != markIssued || !now.Before(at.Add(hubcore.RegistrationIDTTL)) {
					return nil, gone(id)
				}
			}
		}
		if cond.Version > 0 && cur != cond.Version || cond.Absent && live {
			return nil, conflict(cur)
		}
		rec, nt := recordOfRegistration(r, cur+1, inline)
		c := &change{sl: sl, iid: sl.iid, newRec: rec, newTpl: nt, tomb: true, tombID: id, tombOld: m}
		done, err := s.tryApply(ctx, c, inline)
		if err != nil {
			return nil, err
		}
		if done {
			return s.toRegistration(ctx, sl.sh, rec)
		}
	}
	return nil, unavailable(errors.New("too many concurrent writes to one registration"))
}

// GetRegistration returns a stored or projected registration.
func (s *Store) GetRegistration(ctx context.Context, id string) (*hubcore.Registration, error) {
	if instID, th, ok := hubcore.ParseProjectionID(id); ok {
		in, err := s.GetInstallation(ctx, instID)
		if err != nil {
			return nil, err
		}
		for _, r := range in.Registrations() {
			if sameProjection(r.RegistrationID, th) {
				return &r, nil
			}
		}
		return nil, notFound("registration")
	}
	sl, err := s.locate(ctx, hRegistration, id)
	if err != nil {
		return nil, err
	}
	if !s.live(sl) {
		return nil, notFound("registration")
	}
	return s.toRegistration(ctx, sl.sh, sl.rec)
}

// sameProjection reports whether a projected id names the template whose
// hash is th ("" for the native registration).
func sameProjection(projID, th string) bool {
	_, h, _ := hubcore.ParseProjectionID(projID)
	return strings.EqualFold(h, th)
}

// DeleteRegistration deletes a registration conditional on ifMatch; for a
// projected one, the template it stands for or the whole installation.
func (s *Store) DeleteRegistration(ctx context.Context, id string, ifMatch hubcore.Cond) error {
	if instID, th, ok := hubcore.ParseProjectionID(id); ok {
		if th == "" {
			return s.DeleteInstallation(ctx, instID, ifMatch)
		}
		return s.deleteProjectedTemplate(ctx, instID, th, ifMatch)
	}
	for attempt := 0; attempt < maxRetries; attempt++ {
		sl, err := s.locate(ctx, hRegistration, id)
		if err != nil {
			return err
		}
		if sl.rec == nil {
			return notFound("registration")
		}
		m, err := s.regMarker(ctx, sl.sh, id)
		if err != nil {
			return err
		}
		c := &change{sl: sl, iid: sl.iid, free: true, tomb: true, tombID: id, tombOld: m, tombNew: marker(markGone, s.now())}
		if !s.live(sl) {
			// Expired: purge it, remembering when it expired.
			c.tombNew = marker(markGone, sl.rec.expiration)
			if err := s.apply(ctx, c); err != nil && !errors.Is(err, errRetry) {
				return err
			}
			return notFound("registration")
		}
		if ifMatch.Version > 0 && sl.rec.version != ifMatch.Version {
			return conflict(sl.rec.version)
		}
		if err := s.apply(ctx, c); !errors.Is(err, errRetry) {
			return err
		}
	}
	return unavailable(errors.New("too many concurrent writes to one registration"))
}

func (s *Store) deleteProjectedTemplate(ctx context.Context, instID, th string, ifMatch hubcore.Cond) error {
	var errNoTemplate = notFound("registration")
	_, err := s.UpdateInstallation(ctx, instID, func(in *hubcore.Installation) (*hubcore.Installation, error) {
		for name := range in.Templates {
			if sameProjection(hubcore.ProjectionID(in.InstallationID, name), th) {
				if ifMatch.Version > 0 && in.Version != ifMatch.Version {
					return nil, conflict(in.Version)
				}
				out := in.Clone()
				delete(out.Templates, name)
				out.LastUpdate = s.now().UTC()
				return out, nil
			}
		}
		return nil, errNoTemplate
	})
	return err
}
