package policy

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/tester"
)

// exampleDirs lists the example policies; each must have Rego tests.
func exampleDirs(t testing.TB) []string {
	t.Helper()
	entries, err := os.ReadDir("examples")
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join("examples", e.Name()))
		}
	}
	if len(dirs) < 4 {
		t.Fatalf("found %d example policies, want at least 4", len(dirs))
	}
	return dirs
}

// TestRegoExamples runs every example's *_test.rego through OPA's test
// runner, as "opa test examples/<name>" would, with the builtins the engine
// allows: a test passing here on a builtin the gate forbids would mislead.
func TestRegoExamples(t *testing.T) {
	for _, dir := range exampleDirs(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			ctx := context.Background()
			// input.json is a sample input, not data; opa test would be
			// told so with --ignore input.json.
			modules, store, err := tester.LoadWithRegoVersion([]string{dir}, func(_ string, info os.FileInfo, depth int) bool {
				return depth > 0 && info.Name() == "input.json"
			}, ast.RegoV1)
			if err != nil {
				t.Fatal(err)
			}
			txn := storage.NewTransactionOrDie(ctx, store)
			defer store.Abort(ctx, txn)
			compiler := ast.NewCompiler().WithCapabilities(capabilities()).WithDefaultRegoVersion(ast.RegoV1)
			ch, err := tester.NewRunner().
				SetCompiler(compiler).
				SetStore(store).
				SetModules(modules).
				RaiseBuiltinErrors(true).
				SetDefaultRegoVersion(ast.RegoV1).
				RunTests(ctx, txn)
			if err != nil {
				t.Fatal(err)
			}
			ran := 0
			for r := range ch {
				ran++
				switch {
				case r.Error != nil:
					t.Errorf("%s.%s: error: %v", r.Package, r.Name, r.Error)
				case r.Skip:
				case r.Fail:
					t.Errorf("%s.%s: FAIL (%s)", r.Package, r.Name, r.Location)
				default:
					t.Logf("%s.%s: PASS", r.Package, r.Name)
				}
			}
			if ran == 0 {
				t.Fatal("no Rego tests ran")
			}
		})
	}
}
