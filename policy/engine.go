package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/print"
	"go.uber.org/zap"
)

// Defaults for Options fields left zero.
const (
	DefaultQuery        = "data.pushgate.decision"
	DefaultPollInterval = 2 * time.Second
	DefaultEvalTimeout  = 100 * time.Millisecond
)

// Options configure Load.
type Options struct {
	// Dir is the directory holding the policy: .rego modules and
	// .json/.yaml data files, read recursively. *_test.rego files, sample
	// inputs (input.json, *.input.json) and hidden files are not served.
	Dir string
	// Query is a ground reference to the decision document; default
	// DefaultQuery.
	Query string
	// Logger receives reload results and the output of print() calls (at
	// debug level). Nil logs nothing.
	Logger *zap.Logger
	// PollInterval is how often Watch looks at Dir; default
	// DefaultPollInterval.
	PollInterval time.Duration
	// EvalTimeout bounds one Decide; default DefaultEvalTimeout. A policy
	// that runs longer is cancelled and the request denied.
	EvalTimeout time.Duration
	// DecisionCacheSize bounds the decisions kept per loaded policy,
	// keyed by the input paths its rules read; default
	// DefaultDecisionCacheSize, negative for none. A policy that calls a
	// nondeterministic builtin or print is never cached.
	DecisionCacheSize int
}

func (o Options) withDefaults() Options {
	if o.Query == "" {
		o.Query = DefaultQuery
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.PollInterval <= 0 {
		o.PollInterval = DefaultPollInterval
	}
	if o.EvalTimeout <= 0 {
		o.EvalTimeout = DefaultEvalTimeout
	}
	if o.DecisionCacheSize == 0 {
		o.DecisionCacheSize = DefaultDecisionCacheSize
	}
	return o
}

// Engine serves decisions from the current compiled policy. Decide is safe
// for concurrent use and takes no lock: the compiled policy is an immutable
// value behind an atomic pointer, replaced whole by a reload.
type Engine struct {
	opts  Options
	query ast.Ref
	log   *zap.Logger

	cur atomic.Pointer[compiled]

	// reloadMu serializes reloads, so revisions increase in the order
	// policies are swapped in and two compiles never race to swap.
	reloadMu sync.Mutex
	revision uint64 // last revision handed out; under reloadMu
	seen     string // fingerprint of the directory last loaded or rejected; under reloadMu
	lastErr  string // last fingerprint error logged by Watch; under reloadMu
}

// compiled is one loaded policy: immutable once published.
type compiled struct {
	pq       rego.PreparedEvalQuery
	revision uint64
	digest   string
	files    []string
	cache    *decisionCache // nil: every request is evaluated
}

// Load reads and compiles the policy in opts.Dir. It fails when the
// directory cannot be read, a module does not parse or compile (including a
// call to a forbidden builtin), or no rule defines the query.
func Load(ctx context.Context, opts Options) (*Engine, error) {
	opts = opts.withDefaults()
	if opts.Dir == "" {
		return nil, errors.New("policy: no policy directory given")
	}
	q, err := parseQuery(opts.Query)
	if err != nil {
		return nil, err
	}
	e := &Engine{opts: opts, query: q, log: opts.Logger.Named("policy")}
	if err := e.reload(ctx, true); err != nil {
		return nil, err
	}
	return e, nil
}

// parseQuery accepts only a ground reference into data, so the decision is
// one value in the first expression of at most one result.
func parseQuery(s string) (ast.Ref, error) {
	ref, err := ast.ParseRef(s)
	if err != nil {
		return nil, fmt.Errorf("policy: query %q is not a reference such as %s: %w", s, DefaultQuery, err)
	}
	if !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() || len(ref) < 2 {
		return nil, fmt.Errorf("policy: query %q must be a ground reference into data, such as %s", s, DefaultQuery)
	}
	return ref, nil
}

// Revision identifies the policy now serving: 1 after Load, increased by
// each successful reload. Decision.Revision names the policy that made a
// particular decision.
func (e *Engine) Revision() uint64 { return e.cur.Load().revision }

// Digest is a SHA-256 over the served files' names and contents, the same
// for the same policy on every replica; handy in logs beside Revision.
func (e *Engine) Digest() string { return e.cur.Load().digest }

// Files lists the files, relative to the policy directory, that make up the
// served policy.
func (e *Engine) Files() []string { return append([]string(nil), e.cur.Load().files...) }

// Reload recompiles the policy now, whatever the directory's state. On
// failure the previous policy keeps serving and the error is returned (and
// logged).
func (e *Engine) Reload(ctx context.Context) error { return e.reload(ctx, true) }

// Watch polls the policy directory every PollInterval and reloads when the
// set of files, or any file's size or modification time, changes. It blocks
// until ctx is done. Polling rather than inotify keeps the package free of
// dependencies and works on network and container filesystems, including
// Kubernetes ConfigMap volumes, whose files are symlinks swapped atomically
// (they are followed, so the swap shows up as a new modification time).
//
// A file rewritten twice within the filesystem's timestamp granularity with
// the same size is not noticed until its next change; Reload forces a load.
func (e *Engine) Watch(ctx context.Context) {
	t := time.NewTicker(e.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// Errors are logged inside; the loop keeps polling so a fixed
			// policy is picked up.
			_ = e.reload(ctx, false)
		}
	}
}

// reload loads the directory when force is set or its fingerprint changed.
// A fingerprint that failed to load is remembered, so a broken policy is
// reported once rather than on every poll.
func (e *Engine) reload(ctx context.Context, force bool) error {
	e.reloadMu.Lock()
	defer e.reloadMu.Unlock()

	files, fp, err := scan(e.opts.Dir)
	if err != nil {
		err = fmt.Errorf("policy: reading %s: %w", e.opts.Dir, err)
		if force || err.Error() != e.lastErr {
			e.lastErr = err.Error()
			e.logReject(err)
		}
		return err
	}
	e.lastErr = ""
	if !force && fp == e.seen {
		return nil
	}
	e.seen = fp

	c, err := e.compile(ctx, files)
	if err != nil {
		e.logReject(err)
		return err
	}
	e.revision++
	c.revision = e.revision
	e.cur.Store(c)
	e.log.Info("policy loaded",
		zap.String("dir", e.opts.Dir),
		zap.Uint64("revision", c.revision),
		zap.String("digest", c.digest),
		zap.Strings("files", c.files),
		zap.Stringer("decision_cache", c.cache))
	return nil
}

func (e *Engine) logReject(err error) {
	fields := []zap.Field{zap.String("dir", e.opts.Dir), zap.Error(err)}
	if c := e.cur.Load(); c != nil {
		fields = append(fields, zap.Uint64("serving_revision", c.revision))
		e.log.Error("policy rejected; the previous policy keeps serving", fields...)
		return
	}
	e.log.Error("policy rejected", fields...)
}

// servedFile reports whether a file is part of the served policy. Tests,
// sample inputs and hidden files (editor swap files, the ..data directories
// of Kubernetes volumes) are not.
func servedFile(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "_test.rego") ||
		name == "input.json" || strings.HasSuffix(name, ".input.json") {
		return false
	}
	switch filepath.Ext(name) {
	case ".rego", ".json", ".yaml", ".yml":
		return true
	}
	return false
}

// loaderFilter is servedFile in the shape of OPA's loader filter, so the
// loader reads exactly the files scan fingerprinted.
func loaderFilter(_ string, info fs.FileInfo, depth int) bool {
	if depth == 0 {
		return false
	}
	if info.IsDir() {
		return strings.HasPrefix(info.Name(), ".")
	}
	return !servedFile(info.Name())
}

// scan lists the served files under dir (following symlinks, as the loader
// does) and fingerprints their names, sizes and modification times.
func scan(dir string) ([]string, string, error) {
	var files []string
	var lines []string
	var walk func(path, rel string, depth int) error
	walk = func(path, rel string, depth int) error {
		info, err := os.Stat(path)
		if err != nil {
			return err
		}
		if !info.IsDir() {
			if depth == 0 {
				return fmt.Errorf("%s is not a directory", path)
			}
			if servedFile(info.Name()) {
				files = append(files, rel)
				lines = append(lines, fmt.Sprintf("%s\x00%d\x00%d", rel, info.Size(), info.ModTime().UnixNano()))
			}
			return nil
		}
		if depth > 0 && strings.HasPrefix(info.Name(), ".") {
			return nil
		}
		if depth > 32 {
			return fmt.Errorf("%s: directories nested too deep (a symlink loop?)", path)
		}
		entries, err := os.ReadDir(path)
		if err != nil {
			return err
		}
		for _, ent := range entries {
			if err := walk(filepath.Join(path, ent.Name()), filepath.Join(rel, ent.Name()), depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(dir, "", 0); err != nil {
		return nil, "", err
	}
	sort.Strings(files)
	sort.Strings(lines)
	return files, strings.Join(lines, "\n"), nil
}

// capabilities are OPA's builtins minus those that reach the network or the
// process: a policy decides from its input and data alone, and a decision
// on the request path must never wait on an outside service.
var capabilities = sync.OnceValue(func() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	kept := c.Builtins[:0]
	for _, b := range c.Builtins {
		if !forbiddenBuiltin(b.Name) {
			kept = append(kept, b)
		}
	}
	c.Builtins = kept
	return c
})

func forbiddenBuiltin(name string) bool {
	return name == "http.send" || name == "opa.runtime" || strings.HasPrefix(name, "net.lookup")
}

// compile loads the files and prepares the query. The result is complete
// before it is published, so evaluations never see a half-built policy.
func (e *Engine) compile(ctx context.Context, files []string) (*compiled, error) {
	if !hasRego(files) {
		return nil, fmt.Errorf("policy: no .rego files in %s", e.opts.Dir)
	}
	caps := capabilities()
	res, err := loader.NewFileLoader().
		WithRegoVersion(ast.RegoV1).
		WithCapabilities(caps).
		Filtered([]string{e.opts.Dir}, loaderFilter)
	if err != nil {
		return nil, fmt.Errorf("policy: loading %s: %w", e.opts.Dir, err)
	}

	h := sha256.New()
	served := make([]string, 0, len(res.Modules))
	modules := make(map[string]*ast.Module, len(res.Modules))
	for name, m := range res.Modules {
		modules[name] = m.Parsed
	}
	for _, f := range files {
		served = append(served, f)
		data, err := os.ReadFile(filepath.Join(e.opts.Dir, f))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(data))
		h.Write(data)
	}

	compiler := ast.NewCompiler().
		WithCapabilities(caps).
		WithEnablePrintStatements(true)
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("policy: compiling %s: %w", e.opts.Dir, compiler.Errors)
	}
	if len(compiler.GetRulesForVirtualDocument(e.query)) == 0 {
		// A typo in the package or rule name would otherwise deny every
		// request as "undefined"; refuse it at load time instead.
		return nil, fmt.Errorf("policy: no rule in %s defines %s", e.opts.Dir, e.query)
	}

	pq, err := rego.New(
		rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(e.query)))),
		rego.Compiler(compiler),
		rego.Store(inmem.NewFromObjectWithOpts(res.Documents, inmem.OptRoundTripOnWrite(false))),
		rego.Capabilities(caps),
		rego.StrictBuiltinErrors(true),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{e.log}),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: preparing %s: %w", e.opts.Query, err)
	}
	c := &compiled{pq: pq, digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), files: served}
	if e.opts.DecisionCacheSize > 0 {
		if paths, ok := inputPaths(compiler.Modules, ast.BuiltinMap); ok {
			c.cache = newDecisionCache(paths, e.opts.DecisionCacheSize)
		}
	}
	return c, nil
}

func hasRego(files []string) bool {
	for _, f := range files {
		if strings.HasSuffix(f, ".rego") {
			return true
		}
	}
	return false
}

// printHook sends print() output to the debug log, where a policy author
// looks while a decision surprises them.
type printHook struct{ log *zap.Logger }

func (h printHook) Print(pc print.Context, msg string) error {
	loc := ""
	if pc.Location != nil {
		loc = pc.Location.String()
	}
	h.log.Debug("policy print", zap.String("location", loc), zap.String("message", msg))
	return nil
}
