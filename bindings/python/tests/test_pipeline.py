"""Pipelines: numeric and text fit/transform, transform_rows == transform,
parameters by name, save/load/parse, errors, concurrent transforms."""

import math
import os
import shutil
import tempfile
import threading
import unittest

import aims

from aims_testutil import LeakCheckCase, numpy, to_list

X = [[1, 10, 0], [2, 20, 1], [3, 30, 2], [4, 40, 1]]
LABELS = [0, 1, 0, 1]
DOCS = ["The cat sat on the mat", "the dog sat", "", "Cats and dogs!", "a cat, a dog"]

try:
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
except ImportError:
    HashingVectorizer = None


def flat(arr):
    """Flat list of floats from a 2-D numpy array / memoryview or a flat array.array."""
    values = arr.tolist()
    if values and isinstance(values[0], list):
        return [v for row in values for v in row]
    return values


class PipelineCase(LeakCheckCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="aims_pipe_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def assertClose(self, a, b, tol=1e-5):
        self.assertEqual(len(a), len(b))
        for i, (u, v) in enumerate(zip(a, b)):
            if isinstance(u, float) and math.isnan(u):
                self.assertTrue(math.isnan(v), "item %d: %r vs %r" % (i, u, v))
            else:
                self.assertAlmostEqual(u, v, delta=tol, msg="item %d" % i)


class NumericPipelineTest(PipelineCase):
    def numeric(self):
        p = aims.Pipeline()
        self.assertEqual(p.add("standardize", col_begin=0, col_end=2), 0)
        self.assertEqual(p.add("minmax", col_begin=1, col_end=2, low=-1, high=1.0), 1)
        self.assertEqual(p.add("onehot", col_begin=2, col_end=3), 2)
        return p

    def test_fit_transform(self):
        with aims.Dataset.from_dense(X, LABELS) as ds, self.numeric() as p:
            self.assertEqual(p.steps, ["standardize", "minmax", "onehot"])
            self.assertFalse(p.is_fitted)
            with p.fit_transform(ds) as out:
                self.assertTrue(p.is_fitted)
                self.assertEqual(p.output_cols, 2 + 3)
                self.assertEqual((out.rows, out.cols), (4, 5))
                rows = to_list(out.features())
                col0 = [r[0] for r in rows]
                self.assertAlmostEqual(sum(col0), 0.0, places=5)
                self.assertAlmostEqual(sum(v * v for v in col0) / 4, 1.0, places=5)
                self.assertClose([r[1] for r in rows], [-1, -1 / 3, 1 / 3, 1])
                self.assertEqual([r[2:] for r in rows],
                                 [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
                self.assertEqual(to_list(out.labels()), LABELS)  # carried over

    def test_transform_rows_equals_transform(self):
        with aims.Dataset.from_dense(X, LABELS) as ds, self.numeric() as p:
            p.fit(ds)
            with p.transform(ds) as out:
                expect = flat(out.features())
            got = p.transform_rows(X)
            self.assertClose(flat(got), expect)
            if numpy is not None:
                self.assertEqual(got.shape, (4, 5))
                self.assertEqual(got.dtype, numpy.float32)
                arr = numpy.asarray(X, dtype=numpy.float32)
                self.assertClose(p.transform_rows(arr).ravel().tolist(), expect)
                self.assertClose(p.transform_rows(arr[1]).ravel().tolist(), expect[5:10])
            else:
                self.assertEqual(got.typecode, "f")
            single = p.transform_rows(X[2])  # a 1-D input is one row
            self.assertClose(flat(single), expect[10:15])

    def test_params_by_name(self):
        with self.numeric() as p:
            self.assertEqual(p.get_step(0, "col_end"), 2)
            self.assertIsInstance(p.get_step(0, "col_end"), int)
            self.assertEqual(p.get_step(1, "low"), -1.0)
            self.assertIsInstance(p.get_step(1, "high"), float)
            p.set_step(1, low=0, high=10)
            self.assertEqual(p.get_step(1, "high"), 10.0)
            self.assertEqual(p.threads, 1)
            p.threads = 2
            self.assertEqual(p.get_param("threads"), 2)
            p.set_threads(0)
            self.assertEqual(p.threads, 0)

    def test_param_errors(self):
        with self.numeric() as p:
            err = self.assertAimsError(aims.AIMS_E_RANGE, p.set_step, 9, col_begin=0)
            self.assertTrue(err.message)
            err = self.assertAimsError(aims.AIMS_E_UNSUPPORTED, p.set_step, 0, delimiter=1)
            self.assertIn("delimiter", err.message)
            self.assertAimsError(aims.AIMS_E_NOTFOUND, p.set_step, 0, bogus=1)
            err = self.assertAimsError(aims.AIMS_E_RANGE, p.set_param, "threads", 100000)
            self.assertIn("threads", err.message)
            self.assertAimsError(aims.AIMS_E_UNSUPPORTED, p.set_param, "col_begin", 1)
            with self.assertRaises(TypeError):
                p.set_step(0, col_begin=0.5)

    def test_state_and_family_errors(self):
        with aims.Dataset.from_dense(X) as ds, self.numeric() as p:
            self.assertAimsError(aims.AIMS_E_STATE, p.transform, ds)
            self.assertAimsError(aims.AIMS_E_STATE, lambda: p.output_cols)
            self.assertAimsError(aims.AIMS_E_STATE, p.transform_rows, X)
            self.assertAimsError(aims.AIMS_E_INVAL, p.add, "tokenize")
            with self.assertRaises(ValueError):
                p.add("no_such_step")
            with self.assertRaises(TypeError):
                p.fit("not a dataset")
            p.fit(ds)
            err = self.assertAimsError(aims.AIMS_E_INVAL, p.transform_rows, [[1.0, 2.0]])
            self.assertTrue(err.message)
            with self.assertRaises(IndexError):
                p.step_kind(7)
        with aims.Pipeline() as empty, aims.Dataset.from_dense(X) as ds:
            self.assertAimsError(aims.AIMS_E_INVAL, empty.fit, ds)

    def test_nonfinite(self):
        nan = float("nan")
        with self.assertRaises(aims.AimsError) as cm:
            aims.Dataset.from_dense([[1.0, nan], [2.0, 3.0]])
        self.assertIn("row 1, column 2 is NaN", str(cm.exception))
        with aims.Dataset.from_dense([[1.0, nan], [2.0, 3.0]], allow_nonfinite=True) as ds:
            with aims.Pipeline([("standardize",)]) as p:
                err = self.assertAimsError(aims.AIMS_E_INVAL, p.fit, ds)
                self.assertTrue(err.message)
            with aims.Pipeline([("impute", {"strategy": 2, "value": 7.5})]) as p:
                with p.fit_transform(ds) as out:
                    self.assertEqual(to_list(out.features()), [[1, 7.5], [2, 3]])
            with aims.Pipeline([("standardize", {"nonfinite": 1})]) as p:
                p.fit(ds)
                self.assertTrue(math.isnan(flat(p.transform_rows([[0.0, nan]]))[1]))

    def test_save_load_parse(self):
        path = os.path.join(self.tmp, "p.aimsp")
        with aims.Dataset.from_dense(X) as ds, self.numeric() as p:
            p.fit(ds)
            expect = flat(p.transform_rows(X))
            p.save(path)
        with aims.Pipeline.load(path) as back:
            self.assertTrue(back.is_fitted)
            self.assertEqual(back.steps, ["standardize", "minmax", "onehot"])
            self.assertEqual(back.get_step(1, "low"), -1.0)
            self.assertClose(flat(back.transform_rows(X)), expect)
        with open(path, "rb") as f:
            raw = f.read()
        with aims.Pipeline.parse(raw) as back:
            self.assertClose(flat(back.transform_rows(X)), expect)
        with aims.Pipeline.parse(bytearray(raw)) as back:
            self.assertEqual(back.output_cols, 5)
        self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Pipeline.parse, b"not a pipeline file")
        self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Pipeline.parse, raw[:-4])
        with self.assertRaises(aims.AimsError) as ctx:
            aims.Pipeline.load(os.path.join(self.tmp, "missing.aimsp"))
        self.assertIn(ctx.exception.name, ("AIMS_E_NOTFOUND", "AIMS_E_IO"))
        self.assertIn("missing.aimsp", ctx.exception.message)

    def test_concurrent_transform_rows(self):
        rows = [[float(i), float(10 * i), float(i % 3)] for i in range(200)]
        with aims.Dataset.from_dense(rows) as ds, self.numeric() as p:
            p.fit(ds)
            expect = flat(p.transform_rows(rows))
            results, errors = [], []

            def work():
                try:
                    for _ in range(20):
                        results.append(flat(p.transform_rows(rows)))
                except Exception as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            self.assertEqual(errors, [])
            self.assertEqual(len(results), 80)
            for r in results:
                self.assertEqual(r, expect)

    def test_context_manager(self):
        with aims.Pipeline() as p:
            p.add("scale", factor=0.5)
        self.assertTrue(p.closed)
        p.close()
        self.assertAimsError(aims.AIMS_E_CLOSED, p.add, "scale")
        self.assertEqual(repr(p), "<aims.Pipeline closed>")


class TextPipelineTest(PipelineCase):
    def text(self, tfidf=True, buckets=1024):
        steps = [("normalize",), ("tokenize",), ("ngrams", {"ngram_max": 2}),
                 ("hash", {"buckets": buckets})]
        if tfidf:
            steps.append(("tfidf", {"norm": 2}))
        return aims.Pipeline(steps)

    def rows_of(self, ds):
        offsets, ids, weights = ds.tokens()
        offsets, ids = offsets.tolist(), ids.tolist()
        weights = weights.tolist() if weights is not None else None
        out = []
        for i in range(ds.rows):
            a, b = offsets[i], offsets[i + 1]
            out.append((ids[a:b], weights[a:b] if weights is not None else None))
        return out

    def test_hash_counts_tokens_and_ngrams(self):
        with aims.Dataset.from_texts(DOCS) as ds, self.text(tfidf=False) as p:
            with p.fit_transform(ds) as out:
                self.assertEqual(out.token_dim, 1024)
                rows = self.rows_of(out)
                self.assertEqual(len(rows[1][0]), 3 + 2)  # "the dog sat": 3 words, 2 bigrams
                self.assertEqual(rows[2], ([], None))     # empty document
                self.assertIsNone(rows[0][1])
                # "a cat, a dog": "a" is shorter than min_token_len 2 -> "cat dog" + 1 bigram
                self.assertEqual(len(rows[4][0]), 3)
                self.assertTrue(all(0 <= t < 1024 for r in rows for t in r[0]))

    def test_tfidf_rows_are_l2_normalised_and_sorted(self):
        with aims.Dataset.from_texts(DOCS, labels=[0, 1, 0, 1, 0]) as ds, self.text() as p:
            p.fit(ds)
            self.assertEqual(p.output_cols, 1024)
            with p.transform(ds) as out:
                self.assertEqual(to_list(out.labels()), [0, 1, 0, 1, 0])
                for ids, weights in self.rows_of(out):
                    self.assertEqual(ids, sorted(set(ids)))
                    if ids:
                        self.assertAlmostEqual(sum(w * w for w in weights), 1.0, places=5)

    def test_transform_texts_equals_transform(self):
        with aims.Dataset.from_texts(DOCS) as ds, self.text() as p:
            p.fit(ds)
            with p.transform(ds) as a, p.transform_texts(DOCS) as b:
                ra, rb = self.rows_of(a), self.rows_of(b)
                self.assertEqual([r[0] for r in ra], [r[0] for r in rb])
                for (_, wa), (_, wb) in zip(ra, rb):
                    self.assertClose(wa, wb)
                self.assertIsNone(b.labels())

    def test_text_save_load(self):
        path = os.path.join(self.tmp, "text.aimsp")
        with aims.Dataset.from_texts(DOCS) as ds, self.text() as p:
            p.fit(ds)
            p.save(path)
            with p.transform_texts(DOCS[:2]) as a:
                expect = self.rows_of(a)
        with aims.Pipeline.load(path) as back:
            self.assertEqual(back.steps, ["normalize", "tokenize", "ngrams", "hash", "tfidf"])
            self.assertEqual(back.get_step(3, "buckets"), 1024)
            with back.transform_texts(DOCS[:2]) as b:
                got = self.rows_of(b)
            self.assertEqual([r[0] for r in got], [r[0] for r in expect])

    def test_order_and_input_errors(self):
        with aims.Pipeline() as p:
            self.assertEqual(p.add("tokenize"), 0)
            self.assertAimsError(aims.AIMS_E_INVAL, p.add, "normalize")  # out of order
            self.assertAimsError(aims.AIMS_E_INVAL, p.add, "standardize")  # other family
        with self.text() as p, aims.Dataset.from_dense(X) as dense:
            self.assertAimsError(aims.AIMS_E_INVAL, p.fit, dense)  # no text part
            self.assertAimsError(aims.AIMS_E_STATE, p.transform_texts, DOCS)
        with self.text() as p, aims.Dataset.from_texts(DOCS) as ds:
            p.fit(ds)
            self.assertAimsError(aims.AIMS_E_STATE, p.transform_rows, X)

    @unittest.skipIf(HashingVectorizer is None or numpy is None, "scikit-learn not installed")
    def test_matches_scikit_learn(self):
        hv = HashingVectorizer(n_features=1024, alternate_sign=False, norm=None,
                               ngram_range=(1, 2))
        expect = hv.transform(DOCS)
        with aims.Dataset.from_texts(DOCS) as ds, self.text(tfidf=False) as p:
            with p.fit_transform(ds) as out:
                rows = self.rows_of(out)
        for i, (ids, _) in enumerate(rows):
            counts = {}
            for t in ids:
                counts[t] = counts.get(t, 0) + 1
            row = expect.getrow(i)
            self.assertEqual(counts, {int(k): int(v) for k, v in zip(row.indices, row.data)},
                             "document %d" % i)
        # TF-IDF against scikit-learn's transformer on the same hashed counts.
        tt = TfidfTransformer().fit(expect)
        ref = tt.transform(expect)
        with aims.Dataset.from_texts(DOCS) as ds, self.text() as p:
            with p.fit_transform(ds) as out:
                rows = self.rows_of(out)
        for i, (ids, weights) in enumerate(rows):
            row = ref.getrow(i)
            order = numpy.argsort(row.indices)
            self.assertEqual(ids, row.indices[order].tolist(), "document %d" % i)
            self.assertClose(weights, row.data[order].tolist(), tol=1e-5)


if __name__ == "__main__":
    unittest.main()
