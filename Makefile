SHELL := /bin/bash
# ip2p: everyday commands. `make help` lists them.
CARGO ?= cargo
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := message reencode channel_data framer turn_server handover_snapshot admin_request fleet_store proxy_header
# The stateful core target runs without AddressSanitizer: the crates it
# drives forbid unsafe code, and ASan cost it 5x its executions a second.
FUZZ_NO_ASAN := turn_server
SOAK_SECONDS ?= 60

.PHONY: help build run test lint fuzz soak bench bench-compare bench-allocs bench-scaling bench-xdp bench-fleet test-no-xdp install deb test-packaging clean

PREFIX ?= /usr/local
DESTDIR ?=

help:
	@echo "make build   build the workspace (release)"
	@echo "make run     build and run the relay on 127.0.0.1:3478 (demo user printed)"
	@echo "make test    run every test"
	@echo "make test-no-xdp  the relay built without the XDP program still runs (part of make test)"
	@echo "make lint    rustfmt check, clippy -D warnings on all targets, docs build, file sizes, import circles"
	@echo "make fuzz    run each fuzz target for FUZZ_SECONDS (default 30) on nightly"
	@echo "make soak    churn and abuse the release relay for SOAK_SECONDS (default 60); fails if anything grows"
	@echo "make bench   criterion benchmarks"
	@echo "make bench-compare  ip2p-relay vs coturn vs direct with ip2p-bench (needs coturn; TOPOLOGY=veth: namespaces)"
	@echo "make bench-allocs   100,000 concurrent allocations on one node (root: fd limit)"
	@echo "make bench-scaling  1 worker against 2: CPU per packet, split, short-circuit"
	@echo "make bench-xdp      the XDP fast path on and off, coturn, kernel routing, between namespaces (root)"
	@echo "make bench-fleet    three nodes and a local Redis: Allocate rate and latency with the fleet off and on"
	@echo "make install  binary, systemd unit, sysctl file and config under /etc/ip2p (root)"
	@echo "make deb      a Debian package (target/debian/*.deb) with cargo-deb"
	@echo "make test-packaging  make install into a scratch root, and the .deb installed for real (root; CI)"

build:
	xdp/toolchain.sh
	$(CARGO) build --workspace --release --locked

# The relay on 127.0.0.1:3478 with development defaults: a demo user whose
# credentials it prints, loopback peers allowed. Ctrl-C stops it.
run:
	xdp/toolchain.sh
	$(CARGO) run --release --locked -p ip2p-relay -- --dev

# Brings what the tests need first (xdp/toolchain.sh: clang and libbpf's
# headers for the XDP program; tests/deps.sh: coturn's client tools and
# systemd-analyze with apt-get, aioice into .venv). The end-to-end binary
# runs four tests at a time: they mostly wait on sockets, timers and
# coturn's clients, not on the CPU. A second build of the relay with
# another version string (ip2p-relay-next) takes over from the first in the
# handover tests. The bench tables' arithmetic has Python tests
# (bench/*_test.py). Last, the relay built without the XDP
# program must still run.
test:
	xdp/toolchain.sh
	tests/deps.sh
	python3 -m unittest discover -s bench -p '*_test.py'
	$(CARGO) test --workspace --locked --exclude ip2p-tests
	IP2P_VERSION=0.0.0-next $(CARGO) build --locked -p ip2p-relay --bin ip2p-relay
	cp target/debug/ip2p-relay target/debug/ip2p-relay-next
	$(CARGO) build --locked -p ip2p-relay --bin ip2p-relay
	IP2P_RELAY_BIN=$(CURDIR)/target/debug/ip2p-relay IP2P_RELAY_NEXT_BIN=$(CURDIR)/target/debug/ip2p-relay-next \
		$(CARGO) test --locked -p ip2p-tests -- --test-threads=4
	xdp/test-without-program.sh

test-no-xdp:
	xdp/test-without-program.sh

# Sizes too: no source file over 800 lines (the codec's attribute table
# aside), none of the control plane's over 500; its functions over 80
# lines are clippy's too_many_lines (clippy.toml). And no file imports one
# that imports it (wire's attribute and error types excepted).
CONTROL_PLANE := relay/src/config relay/src/node relay/src/lifecycle relay/src/handover relay/src/admin relay/src/main.rs
CRATE_ROOTS := wire/src/lib.rs turn/src/lib.rs client/src/lib.rs xdp/src/lib.rs relay/src/lib.rs relay/src/main.rs \
	bench/src/lib.rs bench/src/main.rs tests/src/lib.rs tests/src/bin/soak.rs tests/e2e/main.rs
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --locked
	@long=$$( { git ls-files -- '*.rs' ':!wire/src/attr.rs' | xargs wc -l | awk '$$2 != "total" && $$1 > 800'; \
		git ls-files -- $(CONTROL_PLANE) | grep '\.rs$$' | xargs wc -l | awk '$$2 != "total" && $$1 > 500'; } ); \
	if [ -n "$$long" ]; then echo "too long, split along their concerns:"; echo "$$long"; exit 1; fi
	python3 tools/import_cycles.py --allow wire/src/attr.rs:wire/src/error.rs $(CRATE_ROOTS)

# Each target starts from its committed seeds (fuzz/corpus/<target>) and
# writes what it finds to a scratch corpus under fuzz/target/, so the
# committed seeds only change on purpose.
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/target/corpus/$$t; \
		san=address; case " $(FUZZ_NO_ASAN) " in *" $$t "*) san=none;; esac; \
		echo "== fuzz $$t for $(FUZZ_SECONDS)s (sanitizer $$san)"; \
		(cd fuzz && $(CARGO) +nightly fuzz run --sanitizer $$san $$t target/corpus/$$t corpus/$$t -- \
			-max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 2>&1 | grep -E '^(Done|stat::number_of_executed_units)|ERROR|panicked'; \
			exit $${PIPESTATUS[0]}) || exit 1; \
	done

# Clients churning allocations and a stranger sending garbage, for
# SOAK_SECONDS; RSS, fds, threads and timers sampled every 5 s into
# target/soak (samples.csv, soak.svg). Fails if one of them grows.
soak:
	$(CARGO) build --release --locked -p ip2p-relay -p ip2p-tests --bin ip2p-relay --bin ip2p-soak
	IP2P_RELAY_BIN=target/release/ip2p-relay target/release/ip2p-soak $(SOAK_SECONDS) target/soak

bench:
	$(CARGO) bench --workspace --locked

# ip2p-relay, coturn and the direct path in one run, one table.
bench-compare:
	bench/compare.sh

# Client, relay and peer in network namespaces over veth: ip2p with the
# XDP fast path on and off, coturn, and the kernel routing the same traffic.
bench-xdp:
	bench/xdp.sh

bench-allocs:
	bench/many-allocs.sh

bench-scaling:
	bench/scaling.sh

# Three nodes and a local redis-server: allocations a second and Allocate
# latency with the fleet off and on, and revocation to the last session.
bench-fleet:
	bench/fleet.sh

# The binary to $(PREFIX)/bin, the unit to /etc/systemd/system (pointing at
# that binary), the sysctl file, and /etc/ip2p with the example config and,
# when there is none, a first relay.toml (loopback only, random secrets) and
# the ip2p-relay user. With DESTDIR (staging) the user and config are left
# to the target host: run deploy/setup.sh there.
install: build
	install -D -m 755 target/release/ip2p-relay $(DESTDIR)$(PREFIX)/bin/ip2p-relay
	install -d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/sysctl.d $(DESTDIR)/etc/ip2p
	sed 's|/usr/local/bin/ip2p-relay|$(PREFIX)/bin/ip2p-relay|g' deploy/systemd/ip2p-relay.service \
		> $(DESTDIR)/etc/systemd/system/ip2p-relay.service
	install -m 644 deploy/sysctl.d/60-ip2p-relay.conf $(DESTDIR)/etc/sysctl.d/
	install -m 644 deploy/ip2p-relay.example.toml $(DESTDIR)/etc/ip2p/relay.example.toml
	@if [ -z "$(DESTDIR)" ]; then \
		deploy/setup.sh $(PREFIX)/bin/ip2p-relay && \
		echo "installed: edit /etc/ip2p/relay.toml (docs/operations.md), then systemctl daemon-reload && systemctl enable --now ip2p-relay"; \
	fi

# target/debian/ip2p-relay_<version>-1_<arch>.deb; install it with
# `apt-get install ./target/debian/ip2p-relay_*.deb`.
deb:
	@command -v cargo-deb >/dev/null || $(CARGO) install cargo-deb --locked
	mkdir -p target/deb-units
	sed 's|/usr/local/bin/|/usr/bin/|g' deploy/systemd/ip2p-relay.service > target/deb-units/ip2p-relay.service
	$(CARGO) deb -p ip2p-relay --locked

# Installs for real (needs root): run by CI on its throwaway machine.
test-packaging: deb
	deploy/test-packaging.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target
