# mxgate - the two commands of the README, plus a few helpers.
#
#   make run    install what is missing, build, start mxgate on the embedded
#               default config (127.0.0.1:2525, mail for example.test is
#               delivered into ./mxgate-data/mailbox)
#   make test   install what is missing, build, run every test (normal build,
#               then an ASan+UBSan build running the same tests)
#   make bench  install what is missing, build (Release, build-bench/), run
#               the benchmark side by side with Postfix (bench/run.sh) and
#               write bench/results/latest.md + latest.json (< 20 minutes)
#   make deb    build, then build/mxgate_VERSION_ARCH.deb with dpkg-deb
#               (deploy/debian/build-deb.sh; tests/integration/test_package.py)
#   make fuzz   build the libFuzzer targets (clang, build-fuzz/) and run each
#               for FUZZ_SECONDS (default 60); `make test` runs them for
#               FUZZ_SMOKE_SECONDS (default 5) each (docs/fuzzing.md)
#
# Needs root on a bare Debian 12 machine for the apt-get step; with every
# package already there it never calls apt-get.

BUILD      ?= build
BUILD_SAN  ?= build-san
BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 5
JOBS       ?= $(shell nproc)
CONFIG     ?=

# Build dependencies and the real peers the tests drive.
DEB_BUILD  = build-essential cmake pkg-config libevent-dev libssl-dev libspf2-dev \
             libopendkim-dev libopendmarc-dev libidn2-dev libunbound-dev libinih-dev \
             libcmocka-dev libsystemd-dev libjansson-dev libgmime-3.0-dev libzip-dev libhiredis-dev libsqlite3-dev libpq-dev libxml2-dev zlib1g-dev publicsuffix ca-certificates openssl \
             dns-root-data
DEB_TEST   = python3 python3-pytest python3-nacl libnet-ssleay-perl python3-aiosmtpd python3-dkim python3-authres python3-dnspython \
             swaks postfix unbound opendkim-tools ldnsutils bind9-dnsutils \
             clang libclang-rt-14-dev systemd python3-yaml clamav-daemon rspamd postgresql libxml2-utils redis-server \
             chromium chromium-driver python3-selenium python3-boto3
DEB_RUN    = swaks dns-root-data
# The benchmark's load generators, downstream, DNS and the Postfix reference
# gateway with its milters and policy server (bench/README.md).
DEB_BENCH  = postfix unbound opendkim opendmarc postfix-policyd-spf-python \
             rspamd clamav-daemon clamav-milter \
             python3 python3-dkim python3-dnspython publicsuffix openssl \
             iproute2 util-linux e2fsprogs
BUILD_BENCH ?= build-bench
# npm packages of the tests (deps-test), outside the tree and shared by
# every checkout of the machine; exported, the tests read it (the same default).
MXGATE_NPM_DIR ?= $(HOME)/.cache/mxgate/npm
export MXGATE_NPM_DIR
CFN_SPEC   = @aws-cdk/aws-service-spec
CFN_SPEC_VERSION ?= 0.1.216

.PHONY: all deps deps-test deps-npm deps-bench build build-san build-bench run test test-fast test-san \
        bench clean docs deb build-fuzz fuzz fuzz-smoke

all: build

# Install only what is missing (dpkg-query answers without apt's lists).
define install_missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install_missing,$(DEB_BUILD) $(DEB_RUN))

deps-test: deps
	$(call install_missing,$(DEB_TEST))
	@command -v npm >/dev/null || $(MAKE) --no-print-directory deps-npm
	@if ! grep -qs '"version": "$(CFN_SPEC_VERSION)"' \
	    $(MXGATE_NPM_DIR)/node_modules/$(CFN_SPEC)/package.json; then \
	  echo "installing $(CFN_SPEC)@$(CFN_SPEC_VERSION) into $(MXGATE_NPM_DIR)"; \
	  mkdir -p $(MXGATE_NPM_DIR) && npm install --prefix $(MXGATE_NPM_DIR) --no-audit --no-fund \
	    --no-package-lock --loglevel=error $(CFN_SPEC)@$(CFN_SPEC_VERSION); \
	fi

# Debian's npm, only where no npm is on PATH (e.g. NodeSource's nodejs has one).
deps-npm:
	$(call install_missing,npm)

# The CloudFormation resource database tests/integration/test_deploy.py checks
# deploy/aws/*.yaml against (tests/integration/cfnspec.py): the AWS CDK
# team's @aws-cdk/aws-service-spec (db.json.gz: every resource type, its
# properties and their types, required ones, GetAtt attributes), republished
# as CloudFormation changes.  PyPI (cfn-lint) is not reachable from our
# machines; the npm registry is.  Pinned, so a run is reproducible: raise
# CFN_SPEC_VERSION (`npm view @aws-cdk/aws-service-spec version`) to check
# against a newer database; the test fails (not skips) without it.  Where
# AWS's linter cfn-lint is on PATH (not a Debian 12 package; this
# workplace's machine image ships 1.51.0), test_deploy.py runs it as well.

build: deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

build-san: deps
	cmake -S . -B $(BUILD_SAN) -DCMAKE_BUILD_TYPE=Debug -DMXGATE_SANITIZE=ON >/dev/null
	cmake --build $(BUILD_SAN) -j $(JOBS)

run: build
	$(BUILD)/mxgate run $(if $(CONFIG),-c $(CONFIG),)

# Normal build first, then the sanitizer build running the same tests.
test: deps-test build build-san
	@rm -f $(BUILD)/spf-conformance.txt
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@cat $(BUILD)/spf-conformance.txt
	$(MAKE) --no-print-directory fuzz-smoke
	cd $(BUILD_SAN) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --output-on-failure -j $(JOBS)

test-fast: deps-test build
	@rm -f $(BUILD)/spf-conformance.txt
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@cat $(BUILD)/spf-conformance.txt

deps-bench: deps
	$(call install_missing,$(DEB_BENCH))

# Release build of its own (-O3).
build-bench: deps
	cmake -S . -B $(BUILD_BENCH) -DCMAKE_BUILD_TYPE=Release >/dev/null
	cmake --build $(BUILD_BENCH) -j $(JOBS)

# Numbers, not assertions: never part of make test.  BENCH_ARGS is passed to
# bench/bench.py (e.g. BENCH_ARGS="--runs 1 --sessions 1,50").
bench: deps-bench build-bench
	bench/run.sh --mxgate $(abspath $(BUILD_BENCH))/mxgate $(BENCH_ARGS)

# libFuzzer targets (tests/fuzz/): a clang build with ASan+UBSan of its own.
build-fuzz: deps-test
	cmake -S . -B $(BUILD_FUZZ) -DCMAKE_C_COMPILER=clang -DMXGATE_FUZZ=ON \
	  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD_FUZZ) -j $(JOBS) --target fuzz-all

fuzz: build-fuzz
	tests/fuzz/run-fuzzers.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

# The short bounded run `make test` does, so a regression fails CI.
fuzz-smoke: build-fuzz
	tests/fuzz/run-fuzzers.sh $(BUILD_FUZZ) $(FUZZ_SMOKE_SECONDS)

# The Debian package: binary, unit, /etc/mxgate default, man pages, logrotate.
deb: build
	deploy/debian/build-deb.sh $(BUILD)

docs: build
	$(BUILD)/mxgate config-reference > docs/config-reference.md

clean:
	rm -rf $(BUILD) $(BUILD_SAN) $(BUILD_FUZZ)
