package webpush

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// The tests speak to the fake as an independent application server would:
// their own JWT minting and RFC 8291 encryption, written here, so that the
// fake is not checked against itself.

var b64 = base64.RawURLEncoding

func start(t testing.TB, opts Options) *Server {
	t.Helper()
	s := New(opts)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func httpClient(t testing.TB, s *Server) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: s.CertPool()},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// appServer is a test application server: a VAPID key pair.
type appServer struct {
	key *ecdsa.PrivateKey
	k   string
}

func newAppServer(t testing.TB) *appServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return &appServer{key: key, k: b64.EncodeToString(pub)}
}

// fixedAppServer has a constant key, so that fuzz seeds made in one
// process verify in the fuzzing workers.
func fixedAppServer(t testing.TB) *appServer {
	t.Helper()
	key, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey.Bytes()
	return &appServer{key: key, k: b64.EncodeToString(pub)}
}

// jwtWith signs arbitrary header and claims JSON.
func (a *appServer) jwtWith(t testing.TB, header, claims string) string {
	t.Helper()
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(claims))
	d := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, a.key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return in + "." + b64.EncodeToString(sig)
}

func (a *appServer) claims(aud string, exp time.Time, sub string) string {
	b, _ := json.Marshal(map[string]any{"aud": aud, "exp": exp.Unix(), "sub": sub})
	return string(b)
}

// auth is a valid Authorization value for the fake.
func (a *appServer) auth(t testing.TB, s *Server) string {
	return "vapid t=" + a.jwtWith(t, `{"typ":"JWT","alg":"ES256"}`,
		a.claims(s.URL(), time.Now().Add(12*time.Hour), "mailto:ops@example.com")) + ", k=" + a.k
}

// sealOpts bend the encryption to produce the malformed bodies the fake
// must refuse.
type sealOpts struct {
	rs        uint32 // 0 means 4096
	idlen     int    // 0 means 65
	delimiter byte   // 0 means 2
	padding   int    // zero bytes after the delimiter
	as        *ecdh.PrivateKey
	salt      []byte
	noDelim   bool
}

// seal encrypts plaintext for ch per RFC 8291.
func seal(t testing.TB, ch hubcore.PushChannel, plaintext []byte, o sealOpts) []byte {
	t.Helper()
	uaBytes, err := b64.DecodeString(ch.P256DH)
	if err != nil {
		t.Fatal(err)
	}
	ua, err := ecdh.P256().NewPublicKey(uaBytes)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := b64.DecodeString(ch.Auth)
	if err != nil {
		t.Fatal(err)
	}
	as := o.as
	if as == nil {
		if as, err = ecdh.P256().GenerateKey(rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	salt := o.salt
	if salt == nil {
		salt = make([]byte, 16)
		rand.Read(salt)
	}
	secret, err := as.ECDH(ua)
	if err != nil {
		t.Fatal(err)
	}
	info := append([]byte("WebPush: info\x00"), uaBytes...)
	info = append(info, as.PublicKey().Bytes()...)
	ikm, _ := hkdf.Key(sha256.New, secret, auth, string(info), 32)
	cek, _ := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: aes128gcm\x00", 16)
	nonce, _ := hkdf.Key(sha256.New, ikm, salt, "Content-Encoding: nonce\x00", 12)
	block, _ := aes.NewCipher(cek)
	gcm, _ := cipher.NewGCM(block)

	rs := o.rs
	if rs == 0 {
		rs = 4096
	}
	var hdr bytes.Buffer
	hdr.Write(salt)
	binary.Write(&hdr, binary.BigEndian, rs)
	keyid := as.PublicKey().Bytes()
	if o.idlen != 0 {
		keyid = make([]byte, o.idlen)
	}
	hdr.WriteByte(byte(len(keyid)))
	hdr.Write(keyid)
	rec := append([]byte{}, plaintext...)
	if !o.noDelim {
		d := o.delimiter
		if d == 0 {
			d = 2
		}
		rec = append(rec, d)
	}
	rec = append(rec, make([]byte, o.padding)...)
	return gcm.Seal(hdr.Bytes(), nonce, rec, nil)
}

// pushRequest is a valid push request to ch; tests break one thing in it.
func pushRequest(t testing.TB, s *Server, a *appServer, ch hubcore.PushChannel, body []byte) *http.Request {
	t.Helper()
	r, err := http.NewRequest(http.MethodPost, ch.Endpoint, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("TTL", "60")
	r.Header.Set("Content-Encoding", "aes128gcm")
	r.Header.Set("Content-Type", "application/octet-stream")
	r.Header.Set("Authorization", a.auth(t, s))
	return r
}

func setBody(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// errBody is the fake's error answer.
type errBody struct {
	Code    int    `json:"code"`
	Errno   int    `json:"errno"`
	Error   string `json:"error"`
	Message string `json:"message"`
}

func do(t testing.TB, c *http.Client, r *http.Request) (*http.Response, errBody) {
	t.Helper()
	resp, err := c.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var e errBody
	if resp.StatusCode >= 300 {
		if err := json.Unmarshal(b, &e); err != nil {
			t.Fatalf("error body %q is not JSON: %v", b, err)
		}
		if e.Code != resp.StatusCode {
			t.Errorf("error body code %d, status %d", e.Code, resp.StatusCode)
		}
	}
	return resp, e
}
