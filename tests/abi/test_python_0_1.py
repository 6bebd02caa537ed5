#!/usr/bin/env python3
"""test_python_0_1.py -- the Python package as released in 0.1 runs on this library.

Why: the ctypes bindings are compiled against nothing; they name C symbols and
lay out arguments by hand, so the C ABI promise (docs/ABI.md) is only worth
something to Python users if the 0.1 package keeps working against every later
libaims.so.0. meson runs this with PYTHONPATH=tests/abi/python-0.1 (the snapshot
`make abi-baseline` took of bindings/python/aims) and AIMS_LIBRARY = the library
just built, and it does what a user of 0.1 does: load data, train, predict,
save and reload a bundle, serve it from a node and call it through a client.
Any symbol the 0.1 package declares and the library lost fails at import.
"""
import array
import os
import random
import shutil
import sys
import tempfile

import aims

snap = os.path.join("tests", "abi", "python-0.1")
if snap not in os.path.abspath(aims.__file__):
    sys.exit("imported %s, not the 0.1 snapshot (PYTHONPATH?)" % aims.__file__)

try:
    import numpy
except ImportError:
    numpy = None


def check(cond, what):
    if not cond:
        sys.exit("FAIL: " + what)


def toy_data(n=200, seed=7):
    rnd = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        k = i % 2
        rows.append([rnd.gauss(3.0 if k else -3.0, 1.0) for _ in range(4)])
        labels.append(k)
    return rows, labels


def classes(scores, rows, k=2):
    if numpy is not None:
        return [int(v) for v in numpy.asarray(scores).reshape(rows, k).argmax(axis=1)]
    flat = list(scores)
    return [max(range(k), key=lambda j: flat[i * k + j]) for i in range(rows)]


def main():
    rows, labels = toy_data()
    tmp = tempfile.mkdtemp(prefix="aims-abi-py-")
    try:
        with aims.Dataset.from_dense(rows, labels) as ds:
            model = aims.Model("softmax", 4, 2)
            model.fit(ds, epochs=5, lr=0.1, seed=1)
        pred = classes(model.predict(rows), len(rows))
        acc = sum(p == y for p, y in zip(pred, labels)) / len(rows)
        check(acc > 0.9, "trained accuracy %.3f" % acc)

        bundle = aims.Bundle(None, model, name="toy", version="1")
        model.close()
        path = os.path.join(tmp, "toy.aimsb")
        bundle.save(path)
        direct = classes(bundle.predict_rows(rows[:20]), 20)
        bundle.close()
        bundle = aims.Bundle.load(path)
        check(classes(bundle.predict_rows(rows[:20]), 20) == direct, "reloaded bundle differs")

        registry = aims.Registry()
        node = aims.Node("abi01", workers=2, drain_grace_ms=1)
        node.listen("inproc://abi01")
        node.set_registry(registry)
        svc = node.add_infer("toy", bundle, batch_max=8).start()
        bundle.close()
        client = aims.Client(registry=registry)
        x = numpy.asarray(rows[:20], dtype=numpy.float32) if numpy is not None else \
            ("f32", (20, 4), array.array("f", [v for r in rows[:20] for v in r]))
        y = client.call("toy", "predict", {"x": x}, idempotent=True)["y"]
        ids = y.tolist() if numpy is not None else y.data.tolist()
        check([int(v) for v in ids] == direct, "served predictions differ from the bundle's")
        check(svc.stat("requests") >= 1, "service stat requests")
        check(node.address(0) == "inproc://abi01", "node address")
        client.close()
        node.close()
        registry.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("python 0.1 package ok against %s (train acc %.3f, served 20 rows)"
          % (os.environ.get("AIMS_LIBRARY", "?"), acc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
