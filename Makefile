# reactor-echo: every target, one line each (`make help`).
# Set ADDR to serve elsewhere: make run ADDR=0.0.0.0:9000

ADDR ?= 127.0.0.1:8000
CARGO ?= cargo

.PHONY: help run build test soak upgrade-soak bench bench-compare bench-latency peers perf strace fuzz doc clean check-server

FUZZ_SECONDS ?= 60
# make soak: seconds of load before SIGTERM, and extra server flags passed
# verbatim (SOAK_ARGS="--workers 2"). CARGO_TARGET_DIR is honoured.
SOAK_SECS ?= 60
SOAK_ARGS ?=
# make upgrade-soak: handovers per mode, and extra server flags passed
# verbatim (UPGRADE_SOAK_ARGS="--workers 2").
HANDOVERS ?= 10
UPGRADE_SOAK_ARGS ?=
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)
# make bench, make bench-compare and make bench-latency: one tool,
# target/release/bench, whose three modes share the scenarios and these
# variables but ROUNDS, SERVERS and SYSCALLS (make bench: one round,
# reactor-echo, syscalls always counted; make bench-latency: one core
# count, no ONLY, no SYSCALLS).
# make bench-compare ("Scaling with --workers"): server
# core counts ("1 2 4 8"), the server's CPUs (N cores: the first N of the
# list) and the load generators', load generator processes, rounds, seconds
# per scenario, a subset of servers or scenarios, SYSCALLS=1 to count them;
# a measurement taken while other processes used more than MAX_OTHER CPUs is
# taken again, up to TRIES times.
# Left empty: the tool picks from the CPUs there are (2 CPUs: server on 1,
# load on 0, and both share CPU 0 at 2 server cores: the report says so).
CORES ?=
SERVER_CPUS ?=
CLIENT_CPUS ?=
CLIENTS ?=
ROUNDS ?= 3
BENCH_SECS ?= 4
SERVERS ?=
ONLY ?=
SYSCALLS ?=
MAX_OTHER ?= 0.3
TRIES ?= 3

# The integration suites whose servers start through the harness's
# `Server::start` (tests/common), which adds `--workers 2` when
# REACTOR_ECHO_TEST_WORKERS=2: `make test` runs them once more that way.
# The others start their servers themselves; tests/workers.rs checks that
# this list names every suite that calls `Server::start`.
WORKERS_AGAIN = backpressure cli drain echo framing_modes limits load observe

help:  ## List the targets
	@# The help texts name variables as $$(NAME): print their values instead.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' \
		-v vars='ADDR=$(ADDR) FUZZ_SECONDS=$(FUZZ_SECONDS) SOAK_SECS=$(SOAK_SECS) ROUNDS=$(ROUNDS) BENCH_SECS=$(BENCH_SECS) TARGET_DIR=$(TARGET_DIR)' \
		'BEGIN { n = split(vars, kv, " ") } \
		{ for (i = 1; i <= n; i++) { split(kv[i], p, "="); gsub("\\$$\\(" p[1] "\\)", p[2], $$2) } \
		  printf "  make %-13s %s\n", $$1, $$2 }'

run:  ## Build release and serve on $(ADDR) (talk to it: nc 127.0.0.1 8000)
	$(CARGO) run --release --quiet -- --listen $(ADDR)

build:  ## Build the release binary (target/release/reactor-echo)
	$(CARGO) build --release

test:  ## Format check, clippy -D warnings, docs (private items too) without warnings, every test (unit, integration, doc; the harness's integration suites again with --workers 2), a 20 s soak
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items --quiet
	$(CARGO) test --workspace --no-run --quiet
	@# Two passes side by side, as both mostly wait on sockets and timers:
	@# the server's own tests, and beside them its suites again with
	@# --workers 2, then the bench package's (the checker's suite is the
	@# longest). The second pass's output goes to a file, printed if it fails.
	@# A shell without job control runs `&` jobs with SIGINT ignored, so on
	@# Ctrl-C (or SIGTERM) the trap ends the whole process group: the side
	@# pass, its tests and the servers they started.
	@{ REACTOR_ECHO_TEST_WORKERS=2 $(CARGO) test --quiet -p reactor-echo $(foreach t,$(WORKERS_AGAIN),--test $(t)); \
		again=$$?; $(CARGO) test --quiet -p reactor-echo-bench && exit $$again; } \
		> $(TARGET_DIR)/test-beside.log 2>&1 & beside=$$!; \
	trap 'trap - TERM; kill -TERM 0' INT TERM; \
	$(CARGO) test -p reactor-echo; first=$$?; \
	wait $$beside; second=$$?; \
	if [ $$second -ne 0 ]; then cat $(TARGET_DIR)/test-beside.log; fi; \
	echo "beside: the suites again with --workers 2, and the bench package's: $$(grep -c '^test result: ok' $(TARGET_DIR)/test-beside.log) test binaries ok (log: $(TARGET_DIR)/test-beside.log)"; \
	[ $$first -eq 0 ] && [ $$second -eq 0 ]
	$(CARGO) build --quiet -p reactor-echo -p reactor-echo-bench --bin reactor-echo --bin soak
	$(TARGET_DIR)/debug/soak --server $(TARGET_DIR)/debug/reactor-echo --secs 20 -- $(SOAK_ARGS)

soak:  ## Chaos soak: every fault at once for $(SOAK_SECS) s, bytes and RSS checked, then SIGTERM (SOAK_ARGS: server flags)
	$(CARGO) build --release --quiet -p reactor-echo -p reactor-echo-bench --bin reactor-echo --bin soak
	$(TARGET_DIR)/release/soak --server $(TARGET_DIR)/release/reactor-echo --secs $(SOAK_SECS) -- $(SOAK_ARGS)

upgrade-soak:  ## Live upgrade under load: 10 SIGUSR2 handovers, then 10 naive restarts (SIGTERM, start again), 200 pipelined + 50 connect-echo-close clients and a burst of 100 connects at each; both tables (UPGRADE_SOAK_ARGS: server flags)
	$(CARGO) build --release --quiet -p reactor-echo -p reactor-echo-bench --bin reactor-echo --bin upgrade_soak
	$(TARGET_DIR)/release/upgrade_soak --server $(TARGET_DIR)/release/reactor-echo --handovers $(HANDOVERS) -- $(UPGRADE_SOAK_ARGS)

fuzz:  ## Fuzz the frame decoders for $(FUZZ_SECONDS) s (installs cargo-fuzz if missing)
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run framing -- -max_total_time=$(FUZZ_SECONDS)

bench:  ## reactor-echo alone: the five scenarios (churn included) with latency, CPU, syscalls by kind, RSS, and 10,000 idle connections -> docs/benchmarks.md, docs/benchmarks.svg ($(BENCH_SECS) s per scenario; syscalls need perf or strace)
	$(CARGO) build --release --quiet -p reactor-echo -p reactor-echo-bench --bins
	$(TARGET_DIR)/release/bench --secs "$(BENCH_SECS)" --cores "$(CORES)" --server-cpus "$(SERVER_CPUS)" \
		--client-cpus "$(CLIENT_CPUS)" --clients "$(CLIENTS)" --only "$(ONLY)" \
		--max-other "$(MAX_OTHER)" --tries "$(TRIES)"

peers:  ## Build reactor-echo, the load generator and the peers in release (bench-compare and bench-latency do it first)
	$(CARGO) build --release --quiet -p reactor-echo -p reactor-echo-bench --bins
	$(CARGO) build --release --quiet --manifest-path bench/peers/Cargo.toml --target-dir $(TARGET_DIR)/peers
	@# The Go tutorial's server only where go is installed; the report names what was left out.
	@if command -v go >/dev/null; then \
		echo "go build bench/peers/go-echo"; \
		cd bench/peers/go-echo && GOTOOLCHAIN=local GOFLAGS=-mod=mod go build -o $(abspath $(TARGET_DIR))/peers/release/go-echo . ; \
	else echo "go is not installed: the Go tutorial's server is left out (apt-get install golang-go)"; fi

bench-compare: peers  ## Side by side: reactor-echo, tokio current and multi, thread-per-conn, Go's (if go is installed), monoio (io_uring, where the kernel allows it), $(ROUNDS) interleaved rounds of $(BENCH_SECS) s per server core count, medians, the churn scenario's connections/s and CPU per connection too -> docs/benchmarks.md, docs/benchmarks-scaling.svg (CORES, SERVER_CPUS, CLIENT_CPUS, CLIENTS, SERVERS, ONLY, SYSCALLS, MAX_OTHER, TRIES)
	$(TARGET_DIR)/release/bench compare --peer-dir $(TARGET_DIR)/peers/release --cores "$(CORES)" \
		--server-cpus "$(SERVER_CPUS)" --client-cpus "$(CLIENT_CPUS)" --clients "$(CLIENTS)" \
		--rounds "$(ROUNDS)" --secs "$(BENCH_SECS)" --servers "$(SERVERS)" --only "$(ONLY)" \
		--max-other "$(MAX_OTHER)" --tries "$(TRIES)" $(if $(SYSCALLS),--syscalls)

bench-latency: peers  ## Open-loop latency beside the peers: each server's maximum closed-loop (ping-pong), then 25, 50, 75, 90% of it offered at a fixed rate, p50/p99/p99.9/max from each line's intended send time, $(ROUNDS) interleaved rounds -> docs/benchmarks.md, docs/benchmarks-latency.svg (CORES: one count, SERVER_CPUS, CLIENT_CPUS, CLIENTS, SERVERS, MAX_OTHER, TRIES)
	$(TARGET_DIR)/release/bench latency --peer-dir $(TARGET_DIR)/peers/release --cores "$(CORES)" \
		--server-cpus "$(SERVER_CPUS)" --client-cpus "$(CLIENT_CPUS)" --clients "$(CLIENTS)" \
		--rounds "$(ROUNDS)" --secs "$(BENCH_SECS)" --servers "$(SERVERS)" \
		--max-other "$(MAX_OTHER)" --tries "$(TRIES)"

perf:  ## CPU profile of the server under load (perf record -g), top of the report (needs perf)
	@command -v perf >/dev/null || { echo "perf is missing: apt-get install linux-perf (Debian) or linux-tools-common linux-tools-generic (Ubuntu)"; exit 1; }
	$(CARGO) build --release --quiet -p reactor-echo -p reactor-echo-bench --bins
	$(TARGET_DIR)/release/bench perf

strace:  ## Trace the syscalls of a scripted client session -> $(TARGET_DIR)/strace.txt, its log -> $(TARGET_DIR)/strace.log (needs strace)
	@command -v strace >/dev/null || { echo "strace is missing: apt-get install strace"; exit 1; }
	@command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3"; exit 1; }
	$(CARGO) build --release --quiet
	python3 scripts/strace_session.py $(TARGET_DIR)/release/reactor-echo $(TARGET_DIR)/strace.txt

# make check-server: the server command ({addr} or {port} where it takes its
# address, or it prints `listening on ADDR`) and the checker's flags
# (CHECK_ARGS="--no-drain", "--only read-budget"): docs/tutorial/checklist.md.
SERVER ?= $(TARGET_DIR)/debug/reactor-echo --listen {addr}
CHECK_ARGS ?=

check-server:  ## Check a line-echo server in any language against the edge-triggered checklist (SERVER="./my-server --listen {addr}", CHECK_ARGS)
	$(CARGO) build --quiet -p reactor-echo -p reactor-echo-bench --bin reactor-echo --bin check_server --examples
	$(TARGET_DIR)/debug/check_server $(CHECK_ARGS) -- '$(SERVER)'

doc:  ## Build the library docs, private items included, so every intra-doc link is checked (warnings are errors)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --document-private-items

clean:  ## Remove build output
	$(CARGO) clean
