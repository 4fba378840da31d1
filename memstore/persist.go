package memstore

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/pushgate/pushgate/hubcore"
)

// maxLine bounds one NDJSON line on import: far above the largest valid
// installation (32 templates of a few KB), low enough that a file without
// newlines cannot exhaust memory.
const maxLine = 16 << 20

// Export implements hubcore.Store: one line per live entry, installations
// then registrations, each in key order. It writes a consistent snapshot
// without holding the lock while writing, since records are immutable.
func (s *Store) Export(ctx context.Context, w io.Writer) error {
	now, err := s.lockRead()
	if err != nil {
		return err
	}
	recs := make([]*record, 0, len(s.recs))
	for _, rec := range s.recs {
		if !rec.expired(now) {
			recs = append(recs, rec)
		}
	}
	s.mu.RUnlock()
	sort.Slice(recs, func(i, j int) bool { return recs[i].key < recs[j].key })
	bw := bufio.NewWriterSize(w, 64<<10)
	for i, rec := range recs {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		b, err := json.Marshal(hubcore.ExportRecord{Installation: rec.inst, Registration: rec.reg})
		if err != nil {
			return fmt.Errorf("export %s: %w", rec.key, err)
		}
		bw.Write(b)
		if err := bw.WriteByte('\n'); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// lineError names the line of an import error, keeping its code.
func lineError(line int, err error) error {
	code := hubcore.CodeInvalid
	var he *hubcore.Error
	if errors.As(err, &he) {
		code = he.Code
	}
	return &hubcore.Error{Code: code, Field: fmt.Sprintf("line %d", line), Reason: err.Error(), Err: err}
}

// Import implements hubcore.Store. Each line is validated with the store's
// Limits and written unconditionally; entries that have already expired
// are skipped and not counted; blank lines are skipped.
func (s *Store) Import(ctx context.Context, r io.Reader) (int64, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	var n int64
	line := 0
	for sc.Scan() {
		line++
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if line%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return n, err
			}
		}
		rec, err := s.decodeRecord(b)
		if err != nil {
			return n, lineError(line, err)
		}
		wrote, err := s.importRecord(rec)
		if err != nil {
			return n, lineError(line, err)
		}
		if wrote {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return n, lineError(line+1, fmt.Errorf("line longer than %d bytes", maxLine))
		}
		return n, fmt.Errorf("import: reading line %d: %w", line+1, err)
	}
	return n, nil
}

// decodeRecord parses and validates one export line.
func (s *Store) decodeRecord(b []byte) (*record, error) {
	var er hubcore.ExportRecord
	if err := json.Unmarshal(b, &er); err != nil {
		var he *hubcore.Error
		if errors.As(err, &he) {
			return nil, he
		}
		return nil, invalidf("", "%v", err)
	}
	if in := er.Installation; in != nil {
		if err := in.Validate(s.lim); err != nil {
			return nil, err
		}
		in.Version = 0
		return newInstRecord(in), nil
	}
	rg := er.Registration
	if rg.RegistrationID == "" {
		return nil, invalidf("registration.registrationId", "a registration id is required")
	}
	if err := rg.Validate(s.lim); err != nil {
		return nil, err
	}
	return newRegRecord(rg), nil
}

// importRecord writes rec over whatever has its key (and over a
// tombstone: an import is a restore), unless it has expired.
func (s *Store) importRecord(rec *record) (bool, error) {
	now, err := s.lockWrite()
	if err != nil {
		return false, err
	}
	defer s.mu.Unlock()
	if rec.expired(now) {
		return false, nil
	}
	var cur int64
	if old := s.liveLocked(rec.key, now, true); old != nil {
		if old.inst != nil {
			cur = old.inst.Version
		} else {
			cur = old.reg.Version
		}
	}
	if rec.inst != nil {
		rec.inst.Version = cur + 1
		if rec.inst.LastUpdate.IsZero() {
			rec.inst.LastUpdate = now.UTC()
		}
		// The projections carry the version; rebuild them with it.
		rec = newInstRecord(rec.inst)
	} else {
		rec.reg.Version = cur + 1
		delete(s.tombs, rec.reg.RegistrationID)
	}
	s.putLocked(rec)
	return true, nil
}

// load reads the snapshot at path into the empty store, if it exists.
func (s *Store) load(path string) error {
	ok, err := fileExists(path)
	if err != nil {
		return fmt.Errorf("memstore: snapshot %s: %w", path, err)
	}
	if !ok {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("memstore: snapshot %s: %w", path, err)
	}
	defer f.Close()
	if _, err := s.Import(context.Background(), f); err != nil {
		return fmt.Errorf("memstore: snapshot %s does not load (the file is left untouched): %w", path, err)
	}
	s.mu.Lock()
	s.snapGen = s.gen
	s.mu.Unlock()
	return nil
}

// Snapshot writes the store to Options.Path now, atomically, if anything
// changed since the last snapshot. A store without a Path has nothing to
// do.
func (s *Store) Snapshot() error {
	if s.opts.Path == "" {
		return nil
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.mu.RLock()
	gen, closed := s.gen, s.closed
	s.mu.RUnlock()
	if closed || gen == s.snapGen {
		return nil
	}
	err := writeFileAtomic(s.opts.Path, func(w io.Writer) error {
		return s.Export(context.Background(), w)
	})
	if err != nil {
		return fmt.Errorf("memstore: snapshot %s: %w", s.opts.Path, err)
	}
	// Writes that raced the export may be missing from the file; they are
	// after gen, so the next snapshot writes them.
	s.snapGen = gen
	return nil
}

func (s *Store) snapshotLoop(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			// A failure is retried at the next tick, and the final
			// snapshot at Close reports it.
			_ = s.Snapshot()
		}
	}
}

// writeFileAtomic replaces path with what write produces, so that a crash
// leaves either the old file or the new one: it writes a temporary file in
// the same directory, syncs it, renames it over path and syncs the
// directory so that the rename itself is durable.
func writeFileAtomic(path string, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err = write(f); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
