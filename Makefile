SHELL := /bin/bash
# ip2p: everyday commands. `make help` lists them.
CARGO ?= cargo
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := message reencode channel_data framer turn_server

.PHONY: help build run test lint fuzz bench bench-compare clean

help:
	@echo "make build   build the workspace (release)"
	@echo "make run     build and run the relay on 127.0.0.1:3478 (demo user printed)"
	@echo "make test    run every test"
	@echo "make lint    rustfmt check, clippy -D warnings on all targets, docs build"
	@echo "make fuzz    run each fuzz target for FUZZ_SECONDS (default 30) on nightly"
	@echo "make bench   criterion benchmarks"
	@echo "make bench-compare  ip2p-relay vs coturn vs direct with ip2p-bench (needs coturn)"

build:
	$(CARGO) build --workspace --release --locked

# The relay on 127.0.0.1:3478 with development defaults: a demo user whose
# credentials it prints, loopback peers allowed. Ctrl-C stops it.
run:
	$(CARGO) run --release --locked -p ip2p-relay -- --dev

# The interop tests run coturn's client tools: `apt-get install coturn`.
test:
	$(CARGO) test --workspace --locked

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked

# Each target starts from its committed seeds (fuzz/corpus/<target>) and
# writes what it finds to a scratch corpus under fuzz/target/, so the
# committed seeds only change on purpose.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	cd fuzz && $(CARGO) +nightly fuzz build
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s"; \
		(cd fuzz && $(CARGO) +nightly fuzz run $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units)|ERROR|panicked'; \
			exit $${PIPESTATUS[0]}) || exit 1; \
	done

bench:
	$(CARGO) bench --workspace --locked

# ip2p-relay, coturn and the direct path in one run, one table.
bench-compare:
	bench/compare.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target
