# bench/bench.mk -- included by the top-level Makefile (`make bench`).
# Assumes `make setup` already installed the Debian packages (python3-sklearn,
# python3-pandas, python3-numpy, python3-threadpoolctl, dataset-fashion-mnist,
# fortunes, fortunes-min, libopenblas-dev, libzstd-dev, meson, ninja-build; for
# the training benchmark also python3-torch, fasttext, liblinear-tools; for the
# service benchmark libzmq3-dev and libnng-dev).
# A separate release build dir so timings never come from a debug build.
BENCH_BUILD ?= build-bench

.PHONY: bench
bench:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	ninja -C $(BENCH_BUILD)
	/usr/bin/python3 bench/run.py --build-dir $(BENCH_BUILD)
	/usr/bin/python3 bench/run_train.py --build-dir $(BENCH_BUILD) $(TRAIN_ARGS)
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-svc-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-tls-run
	-@$(MAKE) --no-print-directory -f bench/bench.mk bench-http-run
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
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	-ninja -k 0 -C $(BENCH_BUILD)
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-svc-run

bench-svc-run:
	-ninja -C $(BENCH_BUILD) bench/bench_svc
	/usr/bin/python3 bench/run_svc.py --build-dir $(BENCH_BUILD) $(SVC_ARGS)

# Only the training goals (issue 3): `make -f bench/bench.mk bench-train TRAIN_ARGS=...`
.PHONY: bench-train
bench-train:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	ninja -C $(BENCH_BUILD)
	/usr/bin/python3 bench/run_train.py --build-dir $(BENCH_BUILD) $(TRAIN_ARGS)

# Only the TLS goals (issue 10, P11a-c): `make -f bench/bench.mk bench-tls TLS_ARGS="--rounds 3"`.
# tls vs tcp side by side in one process, alternating with ZeroMQ CURVE (the
# P11a peer); the PKI is made by tests/support/mkcerts.sh. bench/run_tls.py
# writes bench/results/tls-<UTC>.jsonl and latest-tls.jsonl.
.PHONY: bench-tls bench-tls-run
bench-tls:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-tls-run

bench-tls-run:
	ninja -C $(BENCH_BUILD) bench/bench_tls
	-ninja -C $(BENCH_BUILD) bench/peer_zmq_curve
	/usr/bin/python3 bench/run_tls.py --build-dir $(BENCH_BUILD) $(TLS_ARGS)

# Only the HTTP front door goals (issue 12, P12a-c): wrk against the front door
# (binary and JSON infer) and nginx serving a static file of the reply's size,
# plus the added p50 of an HTTP binary call over a native client call:
# `make -f bench/bench.mk bench-http HTTP_ARGS="--rounds 1 --duration 2"`.
.PHONY: bench-http bench-http-run
bench-http:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-http-run

bench-http-run:
	ninja -C $(BENCH_BUILD) bench/bench_http
	/usr/bin/python3 bench/run_http.py --build-dir $(BENCH_BUILD) $(HTTP_ARGS)

# Only the hedging goal (issue 16, P14c): hedged vs unhedged p99 with one of 4
# instances 10x slow: `make -f bench/bench.mk bench-hedge HEDGE_ARGS="400 2000 2"`.
.PHONY: bench-hedge bench-hedge-run
bench-hedge:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-hedge-run

bench-hedge-run:
	ninja -C $(BENCH_BUILD) bench/bench_hedge
	ts=$$(date -u +%Y%m%dT%H%M%SZ); { $(BENCH_BUILD)/bench/bench_hedge tcp $(HEDGE_ARGS); \
	  $(BENCH_BUILD)/bench/bench_hedge inproc $(HEDGE_ARGS); } | tee bench/results/hedge-$$ts.jsonl > bench/results/latest-hedge.jsonl
	cat bench/results/latest-hedge.jsonl

# Only the pipelined throughput goal (issue 15, P14): async calls with many in
# flight on one ipc:// / tcp:// connection against a ZeroMQ DEALER/ROUTER echo
# with the same window, and infer rows/s through one tcp connection:
# `make -f bench/bench.mk bench-pipe PIPE_ARGS="--rounds 1 --seconds 1"`.
.PHONY: bench-pipe bench-pipe-run
bench-pipe:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-pipe-run

bench-pipe-run:
	ninja -C $(BENCH_BUILD) bench/bench_pipe
	-ninja -C $(BENCH_BUILD) bench/peer_zmq_pipe
	/usr/bin/python3 bench/run_pipe.py --build-dir $(BENCH_BUILD) $(PIPE_ARGS)

# Only the overload goals (issue 11, R6 and R4b): goodput, rejection p50/p99 and
# success p99 of one node offered 1.25x, 2.5x and 5x its capacity (under chrt -f 1),
# the same through nginx (max_conns) vs libaims' client in front of two instances,
# one of three instances hung, FIFO vs LIFO:
# `make -f bench/bench.mk bench-overload OVERLOAD_ARGS="--seconds 15 --what peer"`.
# Needs the integration test binary, so its own release build with tests on.
OVERLOAD_BUILD ?= build-bench-ovl
.PHONY: bench-overload bench-overload-run
bench-overload:
	@test -f $(OVERLOAD_BUILD)/build.ninja || meson setup $(OVERLOAD_BUILD) --buildtype=release -Dpython_tests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-overload-run

bench-overload-run:
	ninja -C $(OVERLOAD_BUILD) tests/integration/test_goodput examples/aims_node bench/bench_overload
	/usr/bin/python3 bench/run_overload.py --build-dir $(OVERLOAD_BUILD) $(OVERLOAD_ARGS)

# Only the etcd goals (issue 13): P13a registry operations next to etcdctl and
# P13b client call p50 with the etcd backend vs the in-process registry, side
# by side in one run on a fresh 1-member etcd (bench/bench_etcd.c):
# `make -f bench/bench.mk bench-etcd ETCD_ARGS="100 2000 5"`.
# bench_etcd uses the test harness's etcd starter, so its own release build with tests on.
ETCD_BUILD ?= build-bench-etcd
.PHONY: bench-etcd bench-etcd-run
bench-etcd:
	@test -f $(ETCD_BUILD)/build.ninja || meson setup $(ETCD_BUILD) --buildtype=release -Dpython_tests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-etcd-run

bench-etcd-run:
	ninja -C $(ETCD_BUILD) bench/bench_etcd
	ts=$$(date -u +%Y%m%dT%H%M%SZ); { echo "$(ETCD_BUILD)/bench/bench_etcd $(ETCD_ARGS)  ($$ts, release build)"; \
	  $(ETCD_BUILD)/bench/bench_etcd $(ETCD_ARGS); } | tee bench/results/etcd-$$ts.txt > bench/results/latest-etcd.txt
	cat bench/results/latest-etcd.txt
# Only the durable-jobs goals (P14a checkpoint overhead, P14b kill -> running
# elsewhere): `make -f bench/bench.mk bench-jobs JOBS_ARGS="3 60000"` (reps, rows).
.PHONY: bench-jobs bench-jobs-run
bench-jobs:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	@$(MAKE) --no-print-directory -f bench/bench.mk bench-jobs-run

bench-jobs-run:
	ninja -C $(BENCH_BUILD) bench/bench_jobs
	ts=$$(date -u +%Y%m%dT%H%M%SZ); $(BENCH_BUILD)/bench/bench_jobs $(JOBS_ARGS) \
	  | tee bench/results/jobs-$$ts.jsonl > bench/results/latest-jobs.jsonl
	cat bench/results/latest-jobs.jsonl

# Only the data-parallel training goal (issue 16 item 5): time per epoch of the
# Fashion-MNIST MLP with 2 MPI ranks x 1 thread vs 1 rank x 1 and x 2 threads
# (docs/MPI.md): `make -f bench/bench.mk bench-mpi MPI_ARGS="--rounds 1 --epochs 2"`.
.PHONY: bench-mpi
bench-mpi:
	@test -f $(BENCH_BUILD)/build.ninja || meson setup $(BENCH_BUILD) --buildtype=release -Dtests=false
	ninja -C $(BENCH_BUILD) examples/aims_train_mpi
	/usr/bin/python3 bench/run_mpi.py --build-dir $(BENCH_BUILD) $(MPI_ARGS)
