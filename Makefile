# reactor-echo: every target, one line each (`make help`).
# Set ADDR to serve elsewhere: make run ADDR=0.0.0.0:9000

ADDR ?= 127.0.0.1:8000
CARGO ?= cargo

.PHONY: help run build test soak bench perf strace fuzz doc clean

FUZZ_SECONDS ?= 60
# make soak: seconds of load before SIGTERM, and extra server flags passed
# verbatim (SOAK_ARGS="--workers 2"). CARGO_TARGET_DIR is honoured.
SOAK_SECS ?= 60
SOAK_ARGS ?=
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

help:  ## List the targets
	@# The help texts name variables as $$(NAME): print their values instead.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
		-v vars='ADDR=$(ADDR) FUZZ_SECONDS=$(FUZZ_SECONDS) SOAK_SECS=$(SOAK_SECS)' \
		'BEGIN { n = split(vars, kv, " ") } \
		{ for (i = 1; i <= n; i++) { split(kv[i], p, "="); gsub("\\$$\\(" p[1] "\\)", p[2], $$2) } \
		  printf "  make %-8s %s\n", $$1, $$2 }'

run:  ## Build release and serve on $(ADDR) (talk to it: nc 127.0.0.1 8000)
	$(CARGO) run --release --quiet -- --listen $(ADDR)

build:  ## Build the release binary (target/release/reactor-echo)
	$(CARGO) build --release

test:  ## Format check, clippy -D warnings, docs without warnings, every test (unit, integration, doc; the integration tests again with --workers 2), a 20 s soak
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet
	$(CARGO) test --workspace
	REACTOR_ECHO_TEST_WORKERS=2 $(CARGO) test --quiet -p reactor-echo --tests
	$(CARGO) build --quiet -p reactor-echo -p reactor-echo-bench --bins
	$(TARGET_DIR)/debug/soak --server $(TARGET_DIR)/debug/reactor-echo --secs 20 -- $(SOAK_ARGS)

soak:  ## Chaos soak: every fault at once for $(SOAK_SECS) s, bytes and RSS checked, then SIGTERM (SOAK_ARGS: server flags)
	$(CARGO) build --release --quiet -p reactor-echo -p reactor-echo-bench --bins
	$(TARGET_DIR)/release/soak --server $(TARGET_DIR)/release/reactor-echo --secs $(SOAK_SECS) -- $(SOAK_ARGS)

fuzz:  ## Fuzz the frame decoders for $(FUZZ_SECONDS) s (installs cargo-fuzz if missing)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run framing -- -max_total_time=$(FUZZ_SECONDS)

bench:  ## Benchmark: scenarios, CPU, syscalls, RSS -> docs/benchmarks.md (needs perf or strace)
	$(CARGO) build --release --workspace --quiet
	target/release/bench

perf:  ## CPU profile of the server under load (perf record -g), top of the report (needs perf)
	@command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf (Debian) or linux-tools-common linux-tools-generic (Ubuntu)"; exit 1; }
	$(CARGO) build --release --workspace --quiet
	target/release/bench perf

strace:  ## Trace the syscalls of a scripted client session -> target/strace.txt, its log -> target/strace.log (needs strace)
	@command -v strace >/dev/null || { echo "strace is missing: apt-get install strace"; exit 1; }
	@command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3"; exit 1; }
	$(CARGO) build --release --quiet
	python3 scripts/strace_session.py target/release/reactor-echo target/strace.txt

doc:  ## Build the library docs (warnings are errors)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps

clean:  ## Remove build output
	$(CARGO) clean
