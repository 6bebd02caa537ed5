# Thin wrapper over meson. Each public target does its own set-up on a fresh
# Debian 12 machine (apt-get only for packages that are missing).
#
#   make demo   -- set up, build, run the end-to-end demo (examples/aims_demo);
#                  `make demo ARGS=--processes` runs its services as separate processes
#   make test   -- set up, build, run every suite, then again under ASan+UBSan,
#                  and compile with clang -Werror; ends with "N passed, N failed"
#   make bench  -- set up, build optimised, run bench/ against the peers
#   make abi-baseline -- re-cut the 0.1 ABI baseline (docs/ABI.md): abidw XML of
#                  libaims.so.0 and a snapshot of the Python package, in tests/abi/
#
# Variables: BUILD (build dir), ARGS (extra demo arguments), DATA (data cache).

BUILD ?= build
ASAN_BUILD ?= build-asan
CLANG_BUILD ?= build-clang
TSAN_BUILD ?= build-tsan
# Suites with threads in them; they run again under ThreadSanitizer.
TSAN_SUITES := --suite core --suite pipeline --suite orch --suite model --suite svc
DATA ?= $(CURDIR)/data-cache
ARGS ?=
export AIMS_DATA_DIR := $(DATA)

# Build and test tools, libraries, data sets and peers (DATA.md).
PKGS_BUILD := meson ninja-build pkg-config gcc clang libopenblas-dev libzstd-dev \
              libcmocka-dev python3 python3-numpy gzip binutils \
              libssl-dev openssl \
              libmicrohttpd-dev libcjson-dev curl python3-requests prometheus \
              python3-venv python3-setuptools python3-wheel python3-pip \
              libcurl4-openssl-dev etcd-server etcd-client python3-yaml chromium \
              abigail-tools doxygen libopenmpi-dev openmpi-bin
PKGS_DATA  := dataset-fashion-mnist fortunes fortunes-min python3-sklearn
PKGS_BENCH := python3-pandas python3-threadpoolctl python3-torch fasttext liblinear-tools \
              libzmq3-dev libnng-dev wrk nginx

FMNIST_SRC := /usr/share/datasets/fashion-mnist
FMNIST_FILES := train-images-idx3-ubyte train-labels-idx1-ubyte \
                t10k-images-idx3-ubyte t10k-labels-idx1-ubyte

.PHONY: all setup setup-bench data build demo test bench clean abi-baseline

all: build

# Install only what is missing; apt-get update only when something is.
setup:
	@missing=""; for p in $(PKGS_BUILD) $(PKGS_DATA) $(EXTRA_PKGS); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    SUDO=""; [ "$$(id -u)" -ne 0 ] && SUDO=sudo; \
	    $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing \
	        >/dev/null || exit 1; \
	fi

setup-bench:
	@$(MAKE) --no-print-directory setup EXTRA_PKGS="$(PKGS_BENCH)"

# Fashion-MNIST ships gzip-compressed; zstd cannot read gzip and libaims does
# not link zlib, so the IDX files are decompressed once into the cache.
data: setup
	@mkdir -p $(DATA)/fashion-mnist
	@for f in $(FMNIST_FILES); do \
	    out=$(DATA)/fashion-mnist/$$f; \
	    if [ ! -s $$out ]; then \
	        gzip -dc $(FMNIST_SRC)/$$f.gz > $$out.tmp && mv -f $$out.tmp $$out || exit 1; \
	    fi; \
	done

$(BUILD)/build.ninja:
	meson setup $(BUILD) >/dev/null

build: setup $(BUILD)/build.ninja
	@ninja -C $(BUILD) >/dev/null

demo: build data
	./$(BUILD)/examples/aims_demo --data $(DATA) $(ARGS)

test: build data
	@rm -f .test-summary
	@echo "== gcc build: all suites"
	@meson test -C $(BUILD) --print-errorlogs --num-processes 2 --timeout-multiplier 3 \
	    2>&1 | tee .test-gcc.log | grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout|Expected Fail|Unexpected Pass):' ; true
	@echo "== ASan+UBSan build: all C suites"
	@[ -f $(ASAN_BUILD)/build.ninja ] || meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined \
	    -Db_lundef=false -Dpython_tests=false >/dev/null
	@ninja -C $(ASAN_BUILD) >/dev/null
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    meson test -C $(ASAN_BUILD) --print-errorlogs --num-processes 2 --timeout-multiplier 6 \
	    2>&1 | tee .test-asan.log | grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout|Expected Fail|Unexpected Pass):' ; true
	@echo "== TSan build: concurrency suites"
	@[ -f $(TSAN_BUILD)/build.ninja ] || meson setup $(TSAN_BUILD) -Db_sanitize=thread \
	    -Db_lundef=false -Dpython_tests=false >/dev/null
	@ninja -C $(TSAN_BUILD) >/dev/null
	@TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	    meson test -C $(TSAN_BUILD) --print-errorlogs --num-processes 2 --timeout-multiplier 6 \
	    $(TSAN_SUITES) 2>&1 | tee .test-tsan.log | grep -E '^ *[0-9]+/[0-9]+ |^(Ok|Fail|Skipped|Timeout|Expected Fail|Unexpected Pass):' ; true
	@echo "== clang -Werror build (warnings are errors)"
	@[ -f $(CLANG_BUILD)/build.ninja ] || CC=clang meson setup $(CLANG_BUILD) -Dwerror=true >/dev/null
	@if ninja -C $(CLANG_BUILD) > .test-clang.log 2>&1; then echo "clang build: ok"; \
	    clang_fail=0; else echo "clang build: FAILED"; tail -30 .test-clang.log; clang_fail=1; fi; \
	ok=$$(awk '/^Ok:/ {s+=$$2} END {print s+0}' .test-gcc.log .test-asan.log .test-tsan.log); \
	bad=$$(awk '/^(Fail|Timeout|Unexpected Pass):/ {s+=$$NF} END {print s+0}' .test-gcc.log .test-asan.log .test-tsan.log); \
	skip=$$(awk '/^Skipped:/ {s+=$$2} END {print s+0}' .test-gcc.log .test-asan.log .test-tsan.log); \
	bad=$$((bad + clang_fail)); ok=$$((ok + 1 - clang_fail)); \
	echo "$$ok passed, $$bad failed, $$skip skipped"; \
	[ "$$bad" -eq 0 ]

bench: setup-bench data
	@$(MAKE) --no-print-directory -f bench/bench.mk bench

# The baseline is cut from a build of its own with the default buildtype
# (debugoptimized: -O2 -g; abidw reads the types from the DWARF), restricted to
# the types of the public headers. See docs/ABI.md before re-cutting it.
ABI_BUILD ?= build-abi
abi-baseline: setup
	@[ -f $(ABI_BUILD)/build.ninja ] || meson setup $(ABI_BUILD) --buildtype=debugoptimized \
	    -Dtests=false >/dev/null
	@ninja -C $(ABI_BUILD) >/dev/null
	abidw --no-corpus-path --no-comp-dir-path --no-show-locs --drop-undefined-syms \
	    --headers-dir include/aims --out-file tests/abi/libaims-0.1.abi \
	    $(ABI_BUILD)/src/libaims.so.0
	rm -rf tests/abi/python-0.1 && mkdir -p tests/abi/python-0.1
	cp -R bindings/python/aims tests/abi/python-0.1/
	find tests/abi/python-0.1 -name __pycache__ -prune -exec rm -rf {} +
	@echo "baseline cut: tests/abi/libaims-0.1.abi ($$(grep -c '<function-decl' \
	    tests/abi/libaims-0.1.abi) functions), tests/abi/python-0.1/aims; commit both"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(CLANG_BUILD) $(ABI_BUILD) build-bench .test-*.log
