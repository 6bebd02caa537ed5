"""The model lifecycle through the binding (aims_lifecycle.h, docs/LIFECYCLE.md):
versions loaded by bytes and by path under a model directory, traffic weights
counted per version, rollback, unload, and a canary promoted under traffic.
In-process (inproc://), so the caller is "host" and needs no policy.
"""

import array
import itertools
import os
import random
import shutil
import tempfile
import time

import aims
from aims_testutil import LeakCheckCase

_names = itertools.count(1)


def _toy_rows(n=80, seed=3):
    rnd = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        k = i % 2
        rows.append([rnd.gauss(3.0 if k else -3.0, 1.0) for _ in range(4)])
        labels.append(k)
    return rows, labels


def _x(row):
    return ("f32", (1, 4), array.array("f", row))


def _field(table, version, field):
    for line in table.decode().splitlines():
        parts = line.split()
        if parts and parts[0] == version:
            for p in parts[1:]:
                if p.startswith(field + "="):
                    return int(p.split("=", 1)[1])
            return None
    return None


class TestLifecycle(LeakCheckCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="aims-life-")
        rows, labels = _toy_rows()
        self.rows = rows
        self.paths = {}
        with aims.Dataset.from_dense(rows, labels) as ds:
            for version in ("1", "2"):
                m = aims.Model("softmax", 4, 2)
                m.fit(ds, epochs=2, lr=0.1, seed=int(version))
                b = aims.Bundle(None, m, name="toy", version=version)
                self.paths[version] = os.path.join(self.tmp, "v%s.aims" % version)
                b.save(self.paths[version])
                b.close()
                m.close()
        self.registry = aims.Registry()
        self.node = aims.Node("life%d_%d" % (os.getpid(), next(_names)), drain_grace_ms=1)
        self.node.listen("inproc://" + self.node.name)
        self.node.set_registry(self.registry)
        self.first = aims.Bundle.load(self.paths["1"])
        self.svc = self.node.add_infer("toy", self.first).start()
        self.client = aims.Client(registry=self.registry)

    def tearDown(self):
        self.client.close()
        self.node.close()
        self.first.close()
        self.registry.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def table(self):
        return self.client.call("toy", "versions")["table"]

    def test_load_weights_rollback_unload(self):
        with open(self.paths["2"], "rb") as f:
            data = f.read()
        self.client.load_version("toy", "2", bundle=data)
        self.client.set_version_weight("toy", "2", 3).set_version_weight("toy", "1", 1)
        for i in range(40):
            self.client.call("toy", "predict", {"x": _x(self.rows[i])}, idempotent=True)
        t = self.table()
        self.assertEqual((_field(t, "1", "calls"), _field(t, "2", "calls")), (10, 30))
        self.assertEqual(self.client.canary_state("toy"), "none")
        self.client.set_version_weight("toy", "1", 0)
        self.client.rollback("toy")  # back to 1, the stable version before
        self.assertEqual(_field(self.table(), "2", "weight"), 0)
        self.client.unload_version("toy", "2")
        self.assertIsNone(_field(self.table(), "2", "weight"))
        self.assertAimsError(aims.AIMS_E_NOTFOUND, self.client.unload_version, "toy", "2")

    def test_path_under_model_dir(self):
        self.assertAimsError(aims.AIMS_E_DENIED, self.client.load_version, "toy", "2",
                             path="v2.aims")
        self.svc.set_model_dir(self.tmp)
        self.client.load_version("toy", "2", path="v2.aims")
        self.assertAimsError(aims.AIMS_E_DENIED, self.client.load_version, "toy", "3",
                             path="../" + os.path.basename(self.tmp) + "/../etc/passwd")
        self.assertEqual(_field(self.table(), "2", "weight"), 0)

    def test_canary_promoted(self):
        with open(self.paths["2"], "rb") as f:
            data = f.read()
        self.client.canary_start("toy", "2", bundle=data, percent=50,
                                 rule="window_ms=100 min_calls=10 latency_slack_us=10000000")
        state = "running"
        for i in range(5000):  # bounded: the canary is judged after its window
            self.client.call("toy", "predict", {"x": _x(self.rows[i % 80])}, idempotent=True)
            if i % 20 == 19:
                state = self.client.canary_state("toy")
                if state != "running":
                    break
            time.sleep(0.001)
        self.assertEqual(state, "promoted")
        self.assertEqual(_field(self.table(), "2", "weight"), 100)
