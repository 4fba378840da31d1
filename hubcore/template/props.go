package template

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Props supplies property values to a render. Names are passed folded (see
// Fold), so an implementation keyed by folded names needs no per-lookup
// case conversion.
type Props interface {
	Lookup(folded string) (string, bool)
}

// PropMap is a Props keyed by folded names. Build it with ParseProps or
// NewPropMap; a literal with upper-case keys would never match.
type PropMap map[string]string

// Lookup implements Props.
func (m PropMap) Lookup(folded string) (string, bool) {
	v, ok := m[folded]
	return v, ok
}

// NewPropMap folds the keys of m. When two keys differ only in case, which
// one wins is unspecified.
func NewPropMap(m map[string]string) PropMap {
	pm := make(PropMap, len(m))
	for k, v := range m {
		pm[Fold(k)] = v
	}
	return pm
}

// ParseProps parses the body of a template send: a flat JSON object whose
// values are strings. Numbers and booleans are accepted and kept as their
// JSON text ("3", "true"), since clients that build the body by serialising
// a dictionary often send them. null means the property is absent. Nested
// objects and arrays are rejected: templates can only substitute scalars.
// When names repeat (in any case), the last one wins, as in most JSON
// decoders.
func ParseProps(body []byte) (PropMap, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, propsSyntax(dec, err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, &Error{Offset: 0, Reason: "template properties must be a JSON object"}
	}
	m := make(PropMap)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, propsSyntax(dec, err)
		}
		name, _ := tok.(string)
		off := int(dec.InputOffset())
		tok, err = dec.Token()
		if err != nil {
			return nil, propsSyntax(dec, err)
		}
		switch v := tok.(type) {
		case string:
			m[Fold(name)] = v
		case json.Number:
			m[Fold(name)] = string(v)
		case bool:
			if v {
				m[Fold(name)] = "true"
			} else {
				m[Fold(name)] = "false"
			}
		case nil:
			delete(m, Fold(name))
		case json.Delim:
			kind := "an object"
			if v == '[' {
				kind = "an array"
			}
			return nil, &Error{Offset: off, Reason: fmt.Sprintf("property %q is %s; template properties must be strings", name, kind)}
		}
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, propsSyntax(dec, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err == nil {
			err = errors.New("unexpected data after the JSON object")
		}
		return nil, propsSyntax(dec, err)
	}
	return m, nil
}

// propsSyntax turns a decoder error into an *Error with an offset.
func propsSyntax(dec *json.Decoder, err error) error {
	var se *json.SyntaxError
	off := int(dec.InputOffset())
	if errors.As(err, &se) {
		off = int(se.Offset)
	}
	msg := err.Error()
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		msg = "unexpected end of JSON input"
	}
	msg = strings.TrimPrefix(msg, "json: ")
	return &Error{Offset: off, Reason: "template properties: " + msg}
}

// Overlay layers two Props: Over wins, Under is consulted for names Over
// lacks. It exists so a send can put the message's properties over each
// device's push variables without building a merged map per device: keep
// one Overlay per send and set Under before each render.
type Overlay struct {
	Over, Under Props
}

// Lookup implements Props.
func (o *Overlay) Lookup(folded string) (string, bool) {
	if o.Over != nil {
		if v, ok := o.Over.Lookup(folded); ok {
			return v, true
		}
	}
	if o.Under != nil {
		return o.Under.Lookup(folded)
	}
	return "", false
}
