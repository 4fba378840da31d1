package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// EvalFile loads the policy in policyDir and decides the input in
// inputFile, a JSON document in the Input shape (see
// examples/per_user/input.json). It is the engine a security team's
// "caddy pushgate policy eval" runs, so what they see is what the gate does.
// Like Decide it returns the deny decision beside any evaluation error.
func EvalFile(ctx context.Context, policyDir, inputFile string) (Decision, error) {
	data, err := os.ReadFile(inputFile)
	if err != nil {
		return Decision{}, fmt.Errorf("policy: reading input: %w", err)
	}
	in, err := ParseInput(data)
	if err != nil {
		return Decision{}, fmt.Errorf("policy: %s: %w", inputFile, err)
	}
	e, err := Load(ctx, Options{Dir: policyDir})
	if err != nil {
		return Decision{}, err
	}
	return e.Decide(ctx, in)
}

// ParseInput reads an input document. Unknown keys are errors, so a
// misspelt "requested_tag" does not quietly test a different input.
func ParseInput(data []byte) (Input, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	var in Input
	if err := dec.Decode(&in); err != nil {
		return Input{}, fmt.Errorf("reading the input document: %w", err)
	}
	if dec.More() {
		return Input{}, fmt.Errorf("reading the input document: data after the JSON value")
	}
	return in, nil
}

// PrintDecision writes the decision as indented JSON in the decision
// document's shape.
func PrintDecision(w io.Writer, d Decision) error {
	// Empty lists print as [] rather than null: that is what the policy said.
	for _, l := range []*[]string{&d.Reasons, &d.Keep, &d.Inject} {
		if *l == nil {
			*l = []string{}
		}
	}
	data, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}
