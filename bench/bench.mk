# bench/bench.mk -- included by the top-level Makefile (`make bench`).
# Assumes `make setup` already installed the Debian packages (python3-sklearn,
# python3-pandas, python3-numpy, python3-threadpoolctl, dataset-fashion-mnist,
# fortunes, fortunes-min, libopenblas-dev, libzstd-dev, meson, ninja-build; for
# the training benchmark also python3-torch, fasttext, liblinear-tools; for the
# service benchmark libzmq3-dev and libnng-dev).
# A separate release build dir so timings never come from a debug build.
BENCH_BUILD ?= build-bench

# Most goals below are the same two targets: `bench-NAME` configures a release
# build dir once and runs `bench-NAME-run`, which builds what the goal needs
# and runs it -- a Python harness bench/run_NAME.py (bench_py_run) or a bench
# binary whose stdout becomes bench/results/NAME-<UTC>.EXT and latest-NAME.EXT
# (bench_bin_run). The macros write those targets; each goal keeps its comment,
# its NAME_ARGS variable and its target names.

# $(call bench_setup,DIR,MESON_OPTIONS): configure DIR (release) unless it exists.
bench_setup = @test -f $(1)/build.ninja || meson setup $(1) --buildtype=release $(2)

# $(eval $(call bench_goal,NAME,DIR,MESON_OPTIONS)): bench-NAME.
define bench_goal
.PHONY: bench-$(1) bench-$(1)-run
bench-$(1):
	$$(call bench_setup,$(2),$(3))
	@$$(MAKE) --no-print-directory -f bench/bench.mk bench-$(1)-run
endef

# $(eval $(call bench_py_run,NAME,DIR,NEEDED,OPTIONAL,ARGS_VAR)): bench-NAME-run
# builds the NEEDED ninja targets (failing if they do not build), tries the
# OPTIONAL ones (peers that may lack their library), then runs
# bench/run_NAME.py --build-dir DIR $(ARGS_VAR).
define bench_py_run
bench-$(1)-run:
	$(if $(3),ninja -C $(2) $(3))
	$(if $(4),-ninja -C $(2) $(4))
	/usr/bin/python3 bench/run_$(1).py --build-dir $(2) $$($(5))
endef

# $(eval $(call bench_bin_run,NAME,DIR,EXT)): bench-NAME-run builds
# bench/bench_NAME and runs the shell commands in the variable NAME_cmd
# (expanded when the recipe runs; $$ts there is the run's UTC stamp), their
# stdout teed to bench/results/NAME-<UTC>.EXT and latest-NAME.EXT. The first
# line of every such file is bench/machine.py's {"machine": ...}: the CPU, its
# ISA flags and the kernels DIR's libaims picks there (session 12).
define bench_bin_run
bench-$(1)-run:
	ninja -C $(2) bench/bench_$(1)
	ts=$$$$(date -u +%Y%m%dT%H%M%SZ); { /usr/bin/python3 bench/machine.py --build-dir $(2); \
	  $$($(1)_cmd); } \
	  | tee bench/results/$(1)-$$$$ts.$(3) > bench/results/latest-$(1).$(3)
	cat bench/results/latest-$(1).$(3)
endef

.PHONY: bench
bench:
	$(call bench_setup,$(BENCH_BUILD),-Dtests=false)
	ninja -C $(BENCH_BUILD)
	/usr/bin/python3 bench/run.py --build-dir $(BENCH_BUILD)
	/usr/bin/python3 bench/run_train.py --build-dir $(BENCH_BUILD) $(TRAIN_ARGS)
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-svc-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-tls-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-http-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-json-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-hedge-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-pipe-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-overload
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-etcd
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-jobs-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-mpi

# Only the service goals (issue 4, P6..P10): `make -f bench/bench.mk bench-svc SVC_ARGS=--quick`.
# bench_svc is not built by default (see bench/meson.build); if it does not
# build, run_svc.py still measures the peers and records the error.
.PHONY: bench-svc bench-svc-run
bench-svc:
	$(call bench_setup,$(BENCH_BUILD),-Dtests=false)
	-ninja -k 0 -C $(BENCH_BUILD)
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-svc-run

$(eval $(call bench_py_run,svc,$(BENCH_BUILD),,bench/bench_svc,SVC_ARGS))

# Only the training goals (issue 3): `make -f bench/bench.mk bench-train TRAIN_ARGS=...`
.PHONY: bench-train
bench-train:
	$(call bench_setup,$(BENCH_BUILD),-Dtests=false)
	ninja -C $(BENCH_BUILD)
	/usr/bin/python3 bench/run_train.py --build-dir $(BENCH_BUILD) $(TRAIN_ARGS)

# Only the TLS goals (issue 10, P11a-c): `make -f bench/bench.mk bench-tls TLS_ARGS="--rounds 3"`.
# tls vs tcp side by side in one process, alternating with ZeroMQ CURVE (the
# P11a peer); the PKI is made by tests/support/mkcerts.sh. bench/run_tls.py
# writes bench/results/tls-<UTC>.jsonl and latest-tls.jsonl.
$(eval $(call bench_goal,tls,$(BENCH_BUILD),-Dtests=false))
$(eval $(call bench_py_run,tls,$(BENCH_BUILD),bench/bench_tls,bench/peer_zmq_curve,TLS_ARGS))

# Only the HTTP front door goals (issue 12, P12a-c): wrk against the front door
# (binary and JSON infer) and nginx serving a static file of the reply's size,
# plus the added p50 of an HTTP binary call over a native client call:
# `make -f bench/bench.mk bench-http HTTP_ARGS="--rounds 1 --duration 2"`.
$(eval $(call bench_goal,http,$(BENCH_BUILD),-Dtests=false))
$(eval $(call bench_py_run,http,$(BENCH_BUILD),bench/bench_http,,HTTP_ARGS))

# Only the hedging goal (issue 16, P14c): hedged vs unhedged p99 with one of 4
# instances 10x slow, 5 rounds per transport judged on the median p99s (session
# 12; bench_hedge.c says why): `make -f bench/bench.mk bench-hedge
# HEDGE_ARGS="100 2000 2 sync 5 60"` (calls per thread and round, fast handler
# us, threads, API, rounds, time bound of the rounds in s).
hedge_cmd = $(BENCH_BUILD)/bench/bench_hedge tcp $(HEDGE_ARGS); \
  $(BENCH_BUILD)/bench/bench_hedge inproc $(HEDGE_ARGS)
$(eval $(call bench_goal,hedge,$(BENCH_BUILD),-Dtests=false))
$(eval $(call bench_bin_run,hedge,$(BENCH_BUILD),jsonl))

# Only P12b's decode figure: a 64-row KServe v2 JSON infer request through the
# HTTP door's decoder, MB/s of JSON (goal >= 200): `make -f bench/bench.mk bench-json
# JSON_ARGS="5 200"` (rounds, decodes per round).
json_cmd = $(BENCH_BUILD)/bench/bench_json $(JSON_ARGS)
$(eval $(call bench_goal,json,$(BENCH_BUILD),-Dtests=false))
$(eval $(call bench_bin_run,json,$(BENCH_BUILD),jsonl))

# Only the pipelined throughput goal (issue 15, P14): async calls with many in
# flight on one ipc:// / tcp:// connection against a ZeroMQ DEALER/ROUTER echo
# with the same window, and infer rows/s through one tcp connection:
# `make -f bench/bench.mk bench-pipe PIPE_ARGS="--rounds 1 --seconds 1"`.
$(eval $(call bench_goal,pipe,$(BENCH_BUILD),-Dtests=false))
$(eval $(call bench_py_run,pipe,$(BENCH_BUILD),bench/bench_pipe,bench/peer_zmq_pipe,PIPE_ARGS))

# Only the overload goals (issue 11, R6 and R4b): goodput, rejection p50/p99 and
# success p99 of one node offered 1.25x, 2.5x and 5x its capacity (under chrt -f 1),
# the same through nginx (max_conns) vs libaims' client in front of two instances,
# one of three instances hung, FIFO vs LIFO:
# `make -f bench/bench.mk bench-overload OVERLOAD_ARGS="--seconds 15 --what peer"`.
# Needs the integration test binary, so its own release build with tests on.
OVERLOAD_BUILD ?= build-bench-ovl
$(eval $(call bench_goal,overload,$(OVERLOAD_BUILD),-Dpython_tests=false))
$(eval $(call bench_py_run,overload,$(OVERLOAD_BUILD),tests/integration/test_goodput \
  examples/aims_node bench/bench_overload,,OVERLOAD_ARGS))

# Only the etcd goals (issue 13): P13a registry operations next to etcdctl and
# P13b client call p50 with the etcd backend vs the in-process registry, side
# by side in one run on a fresh 1-member etcd (bench/bench_etcd.c):
# `make -f bench/bench.mk bench-etcd ETCD_ARGS="100 2000 5"`.
# bench_etcd uses the test harness's etcd starter, so its own release build with tests on.
ETCD_BUILD ?= build-bench-etcd
etcd_cmd = echo "$(ETCD_BUILD)/bench/bench_etcd $(ETCD_ARGS)  ($$ts, release build)"; \
  $(ETCD_BUILD)/bench/bench_etcd $(ETCD_ARGS)
$(eval $(call bench_goal,etcd,$(ETCD_BUILD),-Dpython_tests=false))
$(eval $(call bench_bin_run,etcd,$(ETCD_BUILD),txt))

# Only the durable-jobs goals (P14a checkpoint overhead, P14b kill -> running
# elsewhere): `make -f bench/bench.mk bench-jobs JOBS_ARGS="3 60000"` (reps, rows).
jobs_cmd = $(BENCH_BUILD)/bench/bench_jobs $(JOBS_ARGS)
$(eval $(call bench_goal,jobs,$(BENCH_BUILD),-Dtests=false))
$(eval $(call bench_bin_run,jobs,$(BENCH_BUILD),jsonl))

# Only the data-parallel training goal (issue 16 item 5): time per epoch of the
# Fashion-MNIST MLP with 2 MPI ranks x 1 thread vs 1 rank x 1 and x 2 threads
# (docs/MPI.md): `make -f bench/bench.mk bench-mpi MPI_ARGS="--rounds 1 --epochs 2"`.
.PHONY: bench-mpi
bench-mpi:
	$(call bench_setup,$(BENCH_BUILD),-Dtests=false)
	ninja -C $(BENCH_BUILD) examples/aims_train_mpi
	/usr/bin/python3 bench/run_mpi.py --build-dir $(BENCH_BUILD) $(MPI_ARGS)
