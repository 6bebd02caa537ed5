"""Models from Python: create/configure, train (fit and step-wise, progress
callback, cancellation, determinism, checkpoint/resume), predict (numpy and
fallback), evaluate, quantize, save/load/parse/clone, bundles."""

import math
import os
import random
import shutil
import tempfile
import unittest

import aims

from aims_testutil import LeakCheckCase, numpy, run_threads

#: Two topics (0: pets, 1: markets) for the TEXT model tests.
TOPIC_DOCS = ["the cat sat on the mat", "a dog barked at the cat", "stocks fell today",
              "markets rallied on earnings", "the kitten and the puppy", "bond yields rose"]
TOPIC_LABELS = [0, 0, 1, 1, 0, 1]

E_INVAL = 3
E_CORRUPT = 5
E_UNSUPPORTED = 7
E_CANCELLED = 11
E_CLOSED = 14


def blobs(n_per_class=60, classes=3, dim=4, seed=0, spread=0.35):
    """Well-separated Gaussian blobs: rows as lists, labels as ints."""
    rng = random.Random(seed)
    centers = [[(3.0 if (c + j) % classes == 0 else -1.0) + c for j in range(dim)]
               for c in range(classes)]
    x, y = [], []
    for i in range(n_per_class * classes):
        c = i % classes
        x.append([centers[c][j] + rng.gauss(0.0, spread) for j in range(dim)])
        y.append(c)
    return x, y


def rows_of(arr, width):
    """List of rows from a 2-D numpy array, or from a flat array.array."""
    values = arr.tolist()
    if values and isinstance(values[0], list):
        return values
    return [values[i:i + width] for i in range(0, len(values), width)]


def argmax(row):
    return max(range(len(row)), key=lambda k: row[k])


class ModelCase(LeakCheckCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="aims_model_")
        x, y = blobs()
        self.x, self.y = x, y
        self.ds = aims.Dataset.from_dense(x, y)

    def tearDown(self):
        self.ds.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def trained(self, kind="softmax", **params):
        m = aims.Model(kind, 4, 3, hidden=[8] if kind == "mlp" else ())
        defaults = {"epochs": 20, "batch": 16, "lr": 0.1, "seed": 3}
        defaults.update(params)
        m.fit(self.ds, **defaults)
        return m

    # ---- configuration -------------------------------------------------------------
    def test_create_and_introspect(self):
        with aims.Model("mlp", 4, 3, hidden=[8, (5, "tanh")], dropout=0.1) as m:
            self.assertEqual(m.kind, "mlp")
            self.assertEqual((m.input_dim, m.output_dim), (4, 3))
            self.assertFalse(m.is_trained)
            self.assertFalse(m.is_quantized)
            self.assertAlmostEqual(m.get_param("dropout"), 0.1)
            m.set_param("model_threads", 2)
            self.assertEqual(m.get_param("model_threads"), 2)
            self.assertIn("mlp", repr(m))
        self.assertTrue(m.closed)
        self.assertAimsError(E_CLOSED, lambda: m.input_dim)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            aims.Model("nonsense", 4, 3)
        with self.assertRaises(ValueError):
            aims.Model("mlp", 4, 3, hidden=[8], activation="swish")
        self.assertAimsError(E_INVAL, aims.Model, "logistic", 4, 2)
        self.assertAimsError(E_INVAL, aims.Model, "softmax", 0, 3)
        with aims.Model("softmax", 4, 3) as m:
            self.assertAimsError(E_INVAL, m.add_dense, 8)  # not an MLP
            with self.assertRaises(TypeError):
                aims.Trainer("not a model")

    # ---- training ------------------------------------------------------------------
    def test_fit_predict_evaluate(self):
        for kind in ("softmax", "mlp"):
            with self.subTest(kind=kind):
                m = self.trained(kind)
                self.assertTrue(m.is_trained)
                self.assertGreater(m.num_params, 0)
                ev = m.evaluate(self.ds)
                self.assertGreaterEqual(ev.accuracy, 0.95)
                self.assertEqual(ev.rows, len(self.y))
                self.assertEqual(ev.num_classes, 3)
                conf = ev.confusion()
                total = sum(sum(r) for r in (conf.tolist() if numpy is not None else conf))
                self.assertEqual(total, len(self.y))
                self.assertAimsError(E_UNSUPPORTED, ev.get, "mse")
                self.assertIn("accuracy", ev.as_dict())
                proba = rows_of(m.predict(self.x, proba=True), 3)
                self.assertEqual(len(proba), len(self.x))
                for row in proba:
                    self.assertAlmostEqual(sum(row), 1.0, places=4)
                ids = list(m.predict_class(self.x))
                scores = rows_of(m.predict(self.x), 3)
                self.assertEqual(ids, [argmax(r) for r in scores])
                by_ds = rows_of(m.predict_dataset(self.ds, proba=True), 3)
                for a, b in zip(by_ds, proba):
                    for u, v in zip(a, b):
                        self.assertAlmostEqual(u, v, places=6)
                ev.close()
                m.close()

    def test_numpy_zero_copy_and_shapes(self):
        m = self.trained()
        out = m.predict(self.x[:5])
        if numpy is not None:
            self.assertEqual(out.shape, (5, 3))
            self.assertEqual(out.dtype, numpy.float32)
            arr = numpy.asarray(self.x, dtype=numpy.float32)
            self.assertTrue(numpy.array_equal(m.predict(arr[:5]), out))
            self.assertEqual(m.predict_class(arr).dtype, numpy.int32)
        else:
            self.assertEqual(len(out), 15)
        self.assertAimsError(E_INVAL, m.predict, [[1.0, 2.0, 3.0]])  # width 3 != 4
        m.close()

    def test_regression_metrics(self):
        rng = random.Random(5)
        x = [[rng.uniform(-1, 1), rng.uniform(-1, 1)] for _ in range(200)]
        text = "\n".join("%r,%r,%r" % (a, b, 2.0 * a - b + 0.5) for a, b in x).encode()
        ds = aims.Dataset.parse("csv", text, label_column=2, label_kind=1)
        m = aims.Model("linear", 2, 1)
        m.fit(ds, epochs=40, batch=16, lr=0.05, seed=1)
        ev = m.evaluate(ds)
        self.assertLess(ev.mse, 0.01)
        self.assertGreater(ev.r2, 0.99)
        self.assertEqual(ev.num_classes, 0)
        self.assertAimsError(E_UNSUPPORTED, ev.get, "accuracy")
        self.assertAimsError(E_INVAL, m.predict_class, x[:2])
        self.assertAimsError(E_INVAL, m.predict, x[:2], True)  # no probabilities
        ev.close()
        m.close()
        ds.close()

    def test_progress_callback_and_stats(self):
        m = aims.Model("softmax", 4, 3)
        seen = []

        def progress(t):
            seen.append((t.stat("epoch"), t.stat("train_loss"), t.stats["steps_per_epoch"]))
            return False
        t = aims.Trainer(m, progress=progress, epochs=4, batch=30, lr=0.1)
        t.fit(self.ds)
        self.assertEqual([s[0] for s in seen], [1.0, 2.0, 3.0, 4.0])
        self.assertTrue(all(math.isfinite(s[1]) for s in seen))
        self.assertEqual(seen[0][2], 6.0)  # 180 rows / batch 30
        self.assertLess(seen[-1][1], seen[0][1])
        self.assertEqual(t.get_param("epochs"), 4)
        self.assertAlmostEqual(t.get_param("lr"), 0.1)
        t.close()
        m.close()

    def test_callback_stops_and_exceptions_propagate(self):
        m = aims.Model("softmax", 4, 3)
        t = aims.Trainer(m, epochs=10, batch=30, progress=lambda tr: tr.stat("epoch") >= 2)
        self.assertAimsError(E_CANCELLED, t.fit, self.ds)
        self.assertEqual(t.stat("epoch"), 2.0)
        self.assertTrue(m.is_trained)

        def boom(_tr):
            raise KeyError("from the callback")
        t.set_progress(boom)
        with self.assertRaises(KeyError):
            t.fit(self.ds)
        # cancel() from the callback (any thread may call it) also stops the run.
        t.set_progress(lambda tr: tr.cancel())
        self.assertAimsError(E_CANCELLED, t.fit, self.ds)
        t.set_progress(None)
        t.fit(self.ds)
        self.assertEqual(t.stat("epoch"), 10.0)
        t.close()
        m.close()

    def test_trainer_keeps_model_alive(self):
        m = aims.Model("softmax", 4, 3)
        t = aims.Trainer(m, epochs=2, batch=32)
        m.close()  # the trainer still holds the C model
        t.fit(self.ds)
        self.assertTrue(t.model is m)
        t.close()

    def test_stepwise_equals_fit_and_is_deterministic(self):
        a = self.trained("mlp", epochs=3)
        b = self.trained("mlp", epochs=3)
        self.assertEqual(rows_of(a.predict(self.x), 3), rows_of(b.predict(self.x), 3))
        c = aims.Model("mlp", 4, 3, hidden=[8])
        t = aims.Trainer(c, epochs=3, batch=16, lr=0.1, seed=3).begin(self.ds)
        steps = 0
        while not t.step():
            steps += 1
        self.assertEqual(steps + 1, 3 * math.ceil(180 / 16))
        self.assertEqual(rows_of(a.predict(self.x), 3), rows_of(c.predict(self.x), 3))
        t.close()
        for m in (a, b, c):
            m.close()

    def test_checkpoint_resume_is_exact(self):
        ref = self.trained("mlp", epochs=4, optimizer=1, lr=0.01)
        path = os.path.join(self.tmp, "ckpt")
        m = aims.Model("mlp", 4, 3, hidden=[8])
        params = {"epochs": 4, "batch": 16, "lr": 0.01, "seed": 3, "optimizer": 1}
        t = aims.Trainer(m, **params).begin(self.ds)
        t.epoch()
        t.epoch()
        t.checkpoint(path)
        t.close()
        m.close()
        m2 = aims.Model("mlp", 4, 3, hidden=[8])
        t2 = aims.Trainer(m2, **params).begin(self.ds)
        t2.restore(path)
        while not t2.epoch():
            pass
        self.assertEqual(rows_of(ref.predict(self.x), 3), rows_of(m2.predict(self.x), 3))
        t2.close()
        m2.close()
        ref.close()

    def test_shards_train_and_refuse(self):
        # two shards: close to one shard (other sums), deterministic, checked
        params = {"epochs": 3, "batch": 16, "lr": 0.1, "seed": 3}
        preds = []
        for shards in (1, 2, 2):
            m = aims.Model("mlp", 4, 3, hidden=[8])
            t = aims.Trainer(m, **params).set_shards(shards).fit(self.ds)
            preds.append(rows_of(m.predict(self.x), 3))
            t.close()
            m.close()
        self.assertEqual(preds[1], preds[2])
        m = aims.Model("mlp", 4, 3, hidden=[8])
        t = aims.Trainer(m, **params)
        with self.assertRaises(aims.AimsError):
            t.set_shards(0)
        # MPI is not started in this process (or libaims was built without it)
        with self.assertRaises(aims.AimsError) as cm:
            t.set_mpi(True)
        self.assertTrue("aims_init_mpi" in str(cm.exception)
                        or "built without MPI" in str(cm.exception), str(cm.exception))
        t.set_mpi(False)
        t.close()
        m.close()

    def test_precision_and_gemm_backends(self):
        # 256-128-3, batch 64: the first layer's GEMMs are big enough for the own
        # kernels on the trainer's threads
        x, y = blobs(n_per_class=100, dim=256, seed=5, spread=1.0)
        ds = aims.Dataset.from_dense(x, y)
        preds = {}
        for precision, threads, gemm in ((1, 1, 0), (1, 2, 0), (0, 2, 0), (0, 2, 1)):
            m = aims.Model("mlp", 256, 3, hidden=[128], precision=precision)
            self.assertEqual(m.get_param("precision"), precision)
            m.fit(ds, epochs=3, batch=64, lr=0.05, seed=2, train_threads=threads, gemm=gemm)
            self.assertGreater(m.evaluate(ds).accuracy, 0.9)
            preds[(precision, threads, gemm)] = rows_of(m.predict(x), 3)
            m.close()
        # the own kernels' results do not depend on the thread count
        self.assertEqual(preds[(1, 1, 0)], preds[(1, 2, 0)])
        bad = aims.Model("softmax", 4, 3)
        with self.assertRaises(aims.AimsError):
            aims.Trainer(bad, gemm=2)
        bad.close()
        ds.close()

    def test_concurrent_predict(self):
        m = self.trained("mlp")
        # Single-row results computed serially first: the one-row path may round
        # differently from a batch (another kernel), but never between threads.
        want = [rows_of(m.predict(self.x[r:r + 1]), 3)[0] for r in range(len(self.x))]
        errors = []

        def worker(k):
            try:
                for i in range(30):
                    row = (k * 7 + i) % len(self.x)
                    got = rows_of(m.predict(self.x[row:row + 1]), 3)[0]
                    if got != want[row]:
                        errors.append((k, i))
            except Exception as exc:  # reported below, not swallowed
                errors.append(exc)
        run_threads(worker)
        self.assertEqual(errors, [])
        m.close()

    # ---- persistence and optimization --------------------------------------------
    def test_save_load_parse_clone(self):
        m = self.trained("mlp")
        path = os.path.join(self.tmp, "m.aims")
        m.save(path)
        want = rows_of(m.predict(self.x), 3)
        with aims.Model.load(path) as a:
            self.assertEqual(rows_of(a.predict(self.x), 3), want)
        with open(path, "rb") as f:
            data = f.read()
        with aims.Model.parse(data) as b:
            self.assertEqual(rows_of(b.predict(self.x), 3), want)
        with aims.Model.parse(bytearray(data)) as b:
            self.assertEqual(b.kind, "mlp")
        with m.clone() as c:
            self.assertEqual(rows_of(c.predict(self.x), 3), want)
        with self.assertRaises(aims.AimsError):
            aims.Model.parse(data[: len(data) // 2])
        bad = bytearray(data)
        bad[len(bad) // 2] ^= 0xFF
        with self.assertRaises(aims.AimsError):
            aims.Model.parse(bytes(bad))
        m.close()

    def test_quantize(self):
        m = self.trained("mlp")
        q = m.quantize(self.ds)
        self.assertTrue(q.is_quantized)
        self.assertFalse(m.is_quantized)
        acc_f, acc_q = m.evaluate(self.ds), q.evaluate(self.ds)
        self.assertGreaterEqual(acc_q.accuracy, acc_f.accuracy - 0.02)
        self.assertEqual(len(q.predict_class(self.x)), len(self.x))
        for obj in (acc_f, acc_q, q, m):
            obj.close()

    # ---- bundles ---------------------------------------------------------------------
    def test_bundle_rows(self):
        p = aims.Pipeline(["standardize"])
        z = p.fit_transform(self.ds)
        m = aims.Model("softmax", 4, 3)
        m.fit(z, epochs=10, batch=16, lr=0.1)
        b = aims.Bundle(p, m, name="blobs", version="1", classes="a\nb\nc")
        self.assertEqual(b.get_meta("name"), "blobs")
        self.assertIsNone(b.get_meta("no such key"))
        self.assertTrue(b.get_meta("library_version"))
        path = os.path.join(self.tmp, "b.aims")
        b.save(path)
        want = rows_of(m.predict(p.transform_rows(self.x), cols=4), 3)
        b2 = aims.Bundle.load(path)
        got = rows_of(b2.predict_rows(self.x), 3)
        for r1, r2 in zip(got, want):
            for u, v in zip(r1, r2):
                self.assertAlmostEqual(u, v, places=5)
        borrowed = b2.model
        self.assertEqual(borrowed.kind, "softmax")
        self.assertEqual(b2.pipeline.steps, ["standardize"])
        b2.close()  # the borrowed model keeps the bundle alive
        self.assertEqual(borrowed.output_dim, 3)
        with open(path, "rb") as f:
            data = f.read()
        with aims.Bundle.parse(data) as b3:
            self.assertEqual(b3.get_meta("classes"), "a\nb\nc")
        with self.assertRaises(aims.AimsError):
            aims.Bundle.parse(data[:-7])
        with self.assertRaises(TypeError):
            aims.Bundle("pipeline?", m)
        for obj in (borrowed, b, m, z, p):
            obj.close()

    def test_text_model_bundle(self):
        raw = aims.Dataset.from_texts(TOPIC_DOCS * 10, TOPIC_LABELS * 10)
        p = aims.Pipeline(["normalize", "tokenize", ("hash", {"buckets": 1024})])
        tok = p.fit_transform(raw)
        m = aims.Model("text", tok.token_dim, 2, embed_dim=8)
        try:
            m.fit(tok, epochs=20, batch=4, lr=0.2)
        except aims.AimsError as exc:
            if exc.code != E_UNSUPPORTED:
                raise
            for obj in (m, tok, p, raw):
                obj.close()
            self.skipTest("TEXT models not available in this build")
        self.assertGreaterEqual(m.evaluate(tok).accuracy, 0.9)
        b = aims.Bundle(p, m, name="topics")
        out = rows_of(b.predict_texts(["the cat and the dog", "markets fell"], proba=True), 2)
        self.assertEqual([argmax(r) for r in out], [0, 1])
        for obj in (b, m, tok, p, raw):
            obj.close()

    def test_text_linear_hinge(self):
        raw = aims.Dataset.from_texts(TOPIC_DOCS * 10, TOPIC_LABELS * 10)
        p = aims.Pipeline(["normalize", "tokenize", ("hash", {"buckets": 1024}),
                           ("tfidf", {"sublinear_tf": 1})])
        tok = p.fit_transform(raw)
        m = aims.Model("text", tok.token_dim, 2, text_linear=1, loss=3)
        self.assertEqual(m.get_param("text_linear"), 1)
        m.fit(tok, epochs=10, lr=0.2)
        self.assertGreaterEqual(m.evaluate(tok).accuracy, 0.9)
        path = os.path.join(self.tmp, "topics.aimsb")
        saved = aims.Bundle(p, m, name="topics")
        saved.save(path)
        saved.close()
        b = aims.Bundle.load(path)
        out = rows_of(b.predict_texts(["the cat and the dog", "markets fell"]), 2)
        self.assertEqual([argmax(r) for r in out], [0, 1])
        dense = aims.Model("softmax", 4, 3)
        with self.assertRaises(aims.AimsError):  # TEXT only
            dense.set_param("text_linear", 1)
        for obj in (b, m, tok, p, raw, dense):
            obj.close()


if __name__ == "__main__":
    unittest.main()
