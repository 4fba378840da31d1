package fcm

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// account is a service account the fake's token endpoint trusts.
type account struct {
	email   string
	keyID   string
	project string
	pub     *rsa.PublicKey
}

// keyFile is the service-account key file format.
type keyFile struct {
	Type         string `json:"type"`
	ProjectID    string `json:"project_id"`
	PrivateKeyID string `json:"private_key_id"`
	PrivateKey   string `json:"private_key"`
	ClientEmail  string `json:"client_email"`
	ClientID     string `json:"client_id"`
	AuthURI      string `json:"auth_uri"`
	TokenURI     string `json:"token_uri"`
}

// NewServiceAccount makes a service-account key file for projectID whose
// token_uri is tokenURL (the fake's TokenURL), with a new 2048-bit RSA key.
// Register it with Server.AddServiceAccount, or use Server.ServiceAccount,
// which does both.
func NewServiceAccount(projectID, tokenURL string) (keyJSON []byte, err error) {
	if projectID == "" {
		return nil, errors.New("fcm fake: a project id is required")
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	var id [20]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	kid := hex.EncodeToString(id[:])
	return json.MarshalIndent(keyFile{
		Type:         "service_account",
		ProjectID:    projectID,
		PrivateKeyID: kid,
		PrivateKey:   string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		ClientEmail:  fmt.Sprintf("pnsfake-%s@%s.iam.gserviceaccount.com", kid[:8], projectID),
		ClientID:     new(big.Int).SetBytes(id[:9]).String(),
		AuthURI:      "https://accounts.google.com/o/oauth2/auth",
		TokenURI:     tokenURL,
	}, "", "  ")
}

// parseKeyFile reads the public half of a key file.
func parseKeyFile(keyJSON []byte) (*account, error) {
	var kf keyFile
	if err := json.Unmarshal(keyJSON, &kf); err != nil {
		return nil, fmt.Errorf("fcm fake: not a key file: %v", err)
	}
	if kf.Type != "service_account" || kf.ClientEmail == "" || kf.ProjectID == "" || kf.PrivateKeyID == "" {
		return nil, errors.New("fcm fake: a key file needs type service_account, client_email, project_id and private_key_id")
	}
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	if block == nil {
		return nil, errors.New("fcm fake: private_key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("fcm fake: private_key: %v", err)
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("fcm fake: private_key is not an RSA key")
	}
	return &account{email: kf.ClientEmail, keyID: kf.PrivateKeyID, project: kf.ProjectID, pub: &rk.PublicKey}, nil
}

// Token returns a registration token that passes the fake's format check,
// derived from name (letters, digits, '-' and '_'): the same name always
// gives the same token, and different names different tokens. Real tokens
// are an instance id, a colon and a long base64url string; so are these.
func Token(name string) string {
	sum := sha256.Sum256([]byte(name))
	filler := base64.RawURLEncoding.EncodeToString(sum[:])
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(":APA91b")
	for b.Len() < 152 {
		b.WriteString(filler)
	}
	return b.String()
}
