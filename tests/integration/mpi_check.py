#!/usr/bin/env python3
"""mpi_check.py EXE DATA_DIR mpi|nompi -- data-parallel training over Open MPI.

EXE is examples/aims_train_mpi. For each case the one-process reference
(`EXE --shards S`) and `mpirun -np S EXE --mpi` train the same MLP on the same
Fashion-MNIST rows; the model files and bundles rank 0 writes must be equal
byte for byte (docs/MPI.md). The cases cover the fast SGD path with a held-out
split (2 ranks), Adam with dropout and a last batch narrower than the rank
count, so shard 0 is empty (3 ranks), and one rank against the ordinary
trainer. Every process checks its counting allocator balances (EXE exits 1
otherwise).

Built without MPI (third argument "nompi") the test checks the clear
"built without MPI" refusal and exits 77 (skipped). Without the Fashion-MNIST
cache (`make data`) it also exits 77. Loopback only: shared memory (vader)
between ranks on one host, no ssh.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mpi_env import MPI_ENV  # noqa: E402

TIMEOUT = 240

# Open MPI's own start-up allocations that it keeps until exit: not libaims'
# (libaims' memory is checked by the counting allocator in EXE).
LSAN_SUPP = """leak:libmpi.so
leak:libopen-pal.so
leak:libopen-rte.so
leak:libhwloc.so
leak:libevent
leak:libpmix.so
leak:mca_
leak:libucs.so
leak:libucp.so
leak:libuct.so
leak:libfabric.so
"""


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def run(cmd, env):
    print("+ " + " ".join(cmd), flush=True)
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        fail("timed out after %d s: %s" % (TIMEOUT, " ".join(cmd)))
    sys.stdout.write(r.stdout)
    sys.stdout.write(r.stderr)
    if r.returncode != 0:
        fail("exit %d: %s" % (r.returncode, " ".join(cmd)))
    lines = [json.loads(l) for l in r.stdout.splitlines() if l.startswith("{")]
    if len(lines) != 1:
        fail("expected one JSON line (rank 0 only), got %d" % len(lines))
    return lines[0]


def same_bytes(a, b, what):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        da, db = fa.read(), fb.read()
    if da != db:
        first = next((i for i in range(min(len(da), len(db))) if da[i] != db[i]), None)
        fail("%s differ: %s (%d bytes) vs %s (%d bytes), first difference at byte %s"
             % (what, a, len(da), b, len(db), first))
    return len(da)


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    exe, data, built = sys.argv[1], sys.argv[2], sys.argv[3]
    if built != "mpi":
        r = subprocess.run([exe, data, "--mpi", "--rows", "100", "--epochs", "1"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        sys.stdout.write(r.stderr)
        if r.returncode == 77 and "built without MPI" in r.stderr:
            print("SKIP: libaims built without MPI (refusal checked)")
            return 77
        fail("built without MPI, yet --mpi gave exit %d" % r.returncode)
    if not os.path.exists(os.path.join(data, "fashion-mnist", "train-images-idx3-ubyte")):
        print("SKIP: no Fashion-MNIST cache in %s (make data)" % data)
        return 77
    mpirun = shutil.which("mpirun")
    if mpirun is None:
        fail("libaims was built with MPI but mpirun is missing (apt-get install openmpi-bin)")

    tmp = tempfile.mkdtemp(prefix="aims-mpi-")
    try:
        supp = os.path.join(tmp, "lsan.supp")
        with open(supp, "w") as f:
            f.write(LSAN_SUPP)
        env = dict(os.environ)
        env.update(MPI_ENV)
        env.update({
            "OPENBLAS_NUM_THREADS": "1",
            "TMPDIR": tmp,
        })
        # Under ASan: Open MPI keeps some start-up memory to exit; keep its
        # plug-ins loaded (no dlclose at MPI_Finalize) and unwind slowly so the
        # leak stacks name them and the suppressions above apply.
        env["OMPI_MCA_mca_base_component_disable_dlclose"] = "1"
        lsan = env.get("LSAN_OPTIONS", "")
        env["LSAN_OPTIONS"] = (lsan + ":" if lsan else "") + "suppressions=" + supp
        asan = env.get("ASAN_OPTIONS", "")
        env["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "fast_unwind_on_malloc=0"
        cases = [
            (2, ["--rows", "3000", "--epochs", "2", "--batch", "100", "--hidden", "64",
                 "--val", "0.1"]),
            # 1986 = 31 x 64 + 2: the last batch has 2 rows for 3 ranks
            (3, ["--rows", "1986", "--epochs", "2", "--batch", "64", "--hidden", "48",
                 "--opt", "adam", "--dropout", "0.2"]),
            (1, ["--rows", "1000", "--epochs", "1", "--batch", "50", "--hidden", "32"]),
        ]
        for ranks, args in cases:
            common = [data] + args + ["--threads", "1", "--test", "500"]
            ref_m = os.path.join(tmp, "ref%d.aimsm" % ranks)
            ref_b = os.path.join(tmp, "ref%d.aimsb" % ranks)
            mpi_m = os.path.join(tmp, "mpi%d.aimsm" % ranks)
            mpi_b = os.path.join(tmp, "mpi%d.aimsb" % ranks)
            # one rank's reference is the ordinary trainer (no shards)
            ref = run([exe] + common + ["--shards", str(ranks), "--out", ref_m,
                                        "--bundle", ref_b], env)
            got = run([mpirun, "--oversubscribe", "--allow-run-as-root", "-np", str(ranks),
                       exe] + common + ["--mpi", "--out", mpi_m, "--bundle", mpi_b], env)
            if got["ranks"] != ranks:
                fail("rank 0 saw %d ranks, launched %d" % (got["ranks"], ranks))
            nm = same_bytes(ref_m, mpi_m, "model files")
            nb = same_bytes(ref_b, mpi_b, "bundles")
            if ref["train_loss"] != got["train_loss"]:
                fail("train loss %r (one process) vs %r (%d ranks)"
                     % (ref["train_loss"], got["train_loss"], ranks))
            if not 0.5 < got["test_accuracy"] <= 1.0:
                fail("test accuracy %r: the model did not learn" % got["test_accuracy"])
            print("ok: %d ranks == one process with %d shards: model %d bytes, bundle %d "
                  "bytes identical; loss %.6f, test accuracy %.4f"
                  % (ranks, ranks, nm, nb, got["train_loss"], got["test_accuracy"]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
