package caddymodule

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// registerIDTTL is how long an issued register id may wait for its first
// PUT before the device must ask for a new one.
const registerIDTTL = 24 * time.Hour

// registerIDs issues the ids of the device register flow and recognises
// them later without storing them: an id carries its issue time and a MAC
// under a key kept in Caddy's storage, which every replica sharing that
// storage reads. So a PUT to an id this hub never issued, or issued too
// long ago, is answered 410 and the device starts over.
type registerIDs struct {
	key []byte
}

const registerKeyPath = "pushgate/register-id.key"

func newRegisterIDs(ctx caddy.Context) (*registerIDs, error) {
	st := ctx.Storage()
	key, err := st.Load(ctx, registerKeyPath)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := st.Store(ctx, registerKeyPath, key); err != nil {
			return nil, fmt.Errorf("pushgate: storing the register-id key: %v", err)
		}
		// Another replica may have stored its key first; use whichever won.
		key, err = st.Load(ctx, registerKeyPath)
	}
	if err != nil {
		return nil, fmt.Errorf("pushgate: loading the register-id key: %v", err)
	}
	if len(key) < 32 {
		return nil, fmt.Errorf("pushgate: the register-id key in storage is too short")
	}
	return &registerIDs{key: key}, nil
}

// issue returns a new id: {random}-{unix seconds}-{mac}, all hex and
// digits, which is also a valid installation id.
func (r *registerIDs) issue(now time.Time) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	body := hex.EncodeToString(b[:]) + "-" + strconv.FormatInt(now.Unix(), 10)
	return body + "-" + r.mac(body)
}

func (r *registerIDs) mac(body string) string {
	m := hmac.New(sha256.New, r.key)
	m.Write([]byte(body))
	return hex.EncodeToString(m.Sum(nil)[:12])
}

// valid reports whether id was issued here within registerIDTTL.
func (r *registerIDs) valid(id string, now time.Time) bool {
	i := strings.LastIndexByte(id, '-')
	if i < 0 {
		return false
	}
	body, sig := id[:i], id[i+1:]
	if !hmac.Equal([]byte(sig), []byte(r.mac(body))) {
		return false
	}
	j := strings.LastIndexByte(body, '-')
	sec, err := strconv.ParseInt(body[j+1:], 10, 64)
	if j < 0 || err != nil {
		return false
	}
	age := now.Sub(time.Unix(sec, 0))
	return age >= -time.Minute && age <= registerIDTTL
}
