package tagexprtest

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	if err := Check([]string{"b", "a"}, []string{"a", "b"}); err != nil {
		t.Errorf("order must not matter: %v", err)
	}
	err := Check([]string{"a", "a", "c"}, []string{"a", "b"})
	if err == nil {
		t.Fatal("differences not reported")
	}
	for _, w := range []string{"a emitted twice", "b missing", "c not a match"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%v: missing %q", err, w)
		}
	}
}
