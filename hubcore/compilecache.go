package hubcore

import (
	"sort"
	"strconv"
	"strings"
	"sync"
)

// compileCacheShared caches compiled templates by their source. An app puts the same
// few templates on every device, and stores re-validate each record they
// read, so without the cache a broadcast would compile the same template
// once per device. Compiled templates are immutable and safe to share.
var compileCacheShared = &compileCache{m: make(map[string]*CompiledTemplate)}

// compileCacheMax bounds the cache; when full it is cleared, which is crude
// but bounded, and the working set of distinct templates is small.
const compileCacheMax = 4096

type compileCache struct {
	mu sync.RWMutex
	m  map[string]*CompiledTemplate
}

func (c *compileCache) get(key string) *CompiledTemplate {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[key]
}

func (c *compileCache) put(key string, v *CompiledTemplate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= compileCacheMax {
		clear(c.m)
	}
	c.m[key] = v
}

// cacheKey is everything compilation depends on, each part prefixed by its
// length so that no two templates share a key.
func (t *Template) cacheKey(p Platform) string {
	var b strings.Builder
	part := func(s string) {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(0)
		b.WriteString(s)
	}
	part(string(p))
	part(t.Body)
	part(t.Expiry)
	part(t.Priority)
	keys := make([]string, 0, len(t.Headers))
	for k := range t.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		part(k)
		part(t.Headers[k])
	}
	return b.String()
}
