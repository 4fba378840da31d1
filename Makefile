# pushgate — developer entry points. `make test` is what CI runs.

GO        ?= go
PKGS      ?= ./...
# How long `make fuzz` runs each fuzz target (e.g. `make fuzz FUZZTIME=10m`).
FUZZTIME  ?= 3s
BENCHTIME ?= 1s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: test vet lint unit fuzz fuzz-smoke fuzz-run bench storebench sendbench soak help

help:
	@echo "make test   gofmt, vet, staticcheck, race tests + a short run of every fuzz target (what CI runs)"
	@echo "make fuzz   every fuzz target for FUZZTIME (default 3s; e.g. FUZZTIME=10m)"
	@echo "make bench  the benchmarks recorded in docs/BENCHMARKS.md"
	@echo "make storebench  the registry-store benchmark (1M installations vs plain Redis sets; STOREBENCH_N=…)"
	@echo "make sendbench  the delivery benchmark (1M broadcast vs h2load; SENDBENCH_N=…)"
	@echo "make soak   mixed load against Redis for SOAK_FOR (default 10m): zero errors, flat memory and goroutines"
	@echo "make lint   gofmt, go vet and staticcheck"
	@echo "make build  build ./bin/caddy with the pushgate modules"
	@echo "make run    serve Caddyfile.example on https://localhost:8443 (see README)"

test: lint unit fuzz-smoke

vet:
	$(GO) vet $(PKGS)

unit:
	$(GO) test -race -count=1 $(PKGS)

# Every FuzzX target in the module. Targets are found by `go test -list`,
# so a new target is fuzzed without editing this file. `make test` runs each
# for a fixed number of inputs (FUZZSMOKE): a count, unlike a duration,
# cannot trip the fuzzer's own deadline on a busy machine.
FUZZSMOKE ?= 3000x

fuzz:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_FOR=$(FUZZTIME)

fuzz-smoke:
	@$(MAKE) --no-print-directory fuzz-run FUZZ_FOR=$(FUZZSMOKE)

fuzz-run:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for target in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$target ($(FUZZ_FOR))"; \
	    $(GO) test -run='^$$' -fuzz="^$$target$$" -fuzztime=$(FUZZ_FOR) $$pkg; \
	  done; \
	done

bench:
	$(GO) test -run='^$$' -bench=. -benchmem -benchtime=$(BENCHTIME) -count=6 ./hubcore/...

# The registry-store figures of docs/BENCHMARKS.md: STOREBENCH_N
# installations loaded into a redis-server of its own, memory per
# installation, resolutions timed against the plain set commands, upserts
# against redis-benchmark. Needs redis-server and redis-benchmark.
STOREBENCH_N ?= 1000000
storebench:
	$(GO) run ./bench/storebench -n $(STOREBENCH_N) -runs 31

# The delivery figures of docs/BENCHMARKS.md: a broadcast to SENDBENCH_N
# installations through the strict fakes against h2load on the same fakes,
# and single-user send latency. Needs redis-server and h2load (nghttp2-client).
SENDBENCH_N ?= 1000000
sendbench:
	$(GO) run ./bench/sendbench -n $(SENDBENCH_N)

# Mixed registrations, patches, reads, sign-offs and sends against a
# redis-server of its own for SOAK_FOR; fails on any error or on memory or
# goroutine growth after warm-up (bench/soak). Needs redis-server.
SOAK_FOR ?= 10m
soak:
	$(GO) run ./bench/soak -duration $(SOAK_FOR)

lint: vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); exit 1; }
	$(GO) run $(STATICCHECK) $(PKGS)

include xcaddy.mk
