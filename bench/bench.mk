# bench/bench.mk -- included by the top-level Makefile (`make bench`).
# Assumes `make setup` already installed the Debian packages (python3-sklearn,
# python3-pandas, python3-numpy, python3-threadpoolctl, dataset-fashion-mnist,
# fortunes, fortunes-min, libopenblas-dev, libzstd-dev, meson, ninja-build; for
# the training benchmark also python3-torch, fasttext, liblinear-tools).
# A separate release build dir so timings never come from a debug build.
BENCH_BUILD ?= build-bench

.PHONY: bench
bench:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	ninja -C $(BENCH_BUILD)
	/usr/bin/python3 bench/run.py --build-dir $(BENCH_BUILD)
	/usr/bin/python3 bench/run_train.py --build-dir $(BENCH_BUILD) $(TRAIN_ARGS)

# Only the training goals (issue 3): `make -f bench/bench.mk bench-train TRAIN_ARGS=...`
.PHONY: bench-train
bench-train:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	ninja -C $(BENCH_BUILD)
	/usr/bin/python3 bench/run_train.py --build-dir $(BENCH_BUILD) $(TRAIN_ARGS)
