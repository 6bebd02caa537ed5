"""Data honesty from Python: NaN/inf in files and arrays are refused unless
allowed, training that diverges raises AimsError naming the step, and
Model.fit(X, y) takes arrays (numpy or lists)."""

import os
import tempfile
import unittest

import aims

from aims_testutil import LeakCheckCase, numpy

E_INVAL = 3
E_RANGE = 4
E_CORRUPT = 5


class NonFiniteTest(LeakCheckCase):
    def test_csv_nan_names_file_line_column(self):
        fd, path = tempfile.mkstemp(suffix=".csv")
        try:
            with os.fdopen(fd, "w") as f:
                f.write("1,2,0\n3,1e999,1\n")
            err = self.assertAimsError(E_CORRUPT, aims.Dataset.load, aims.Format.CSV, path,
                                       label_column=-2)
            self.assertIn("%s:2: column 2" % path, str(err))
            with aims.Dataset.load(aims.Format.CSV, path, label_column=-2,
                                   allow_nonfinite=1) as ds:
                self.assertEqual(ds.rows, 2)
        finally:
            os.unlink(path)

    def test_dense_inf_refused(self):
        err = self.assertAimsError(E_INVAL, aims.Dataset.from_dense,
                                   [[1.0, 2.0], [float("inf"), 0.0]])
        self.assertIn("row 2, column 1 is inf", str(err))

    @unittest.skipIf(numpy is None, "numpy not available")
    def test_numpy_nan_refused_and_fit_xy(self):
        rng = numpy.random.RandomState(0)
        x = numpy.concatenate([rng.normal(-2, 0.5, (40, 3)),
                               rng.normal(2, 0.5, (40, 3))]).astype(numpy.float32)
        y = numpy.array([0] * 40 + [1] * 40, dtype=numpy.int32)
        bad = x.copy()
        bad[5, 2] = numpy.nan
        m = aims.Model("softmax", 3, 2)
        try:
            err = self.assertAimsError(E_INVAL, m.fit, bad, y)
            self.assertIn("row 6, column 3 is NaN", str(err))
            m.fit(x, y, epochs=5, batch=16)
            pred = m.predict(x)
            self.assertTrue(numpy.isfinite(pred).all())
            acc = float((pred.argmax(axis=1) == y).mean())
            self.assertGreater(acc, 0.9)
        finally:
            m.close()

    def test_divergence_raises_with_step(self):
        x = [[float(r), float(2 * r + 1)] for r in range(64)]
        y = [r % 2 for r in range(64)]
        m = aims.Model("mlp", 2, 2)
        try:
            # cross-entropy on unscaled features with lr 1e6: logits overflow
            with self.assertRaises(aims.AimsError) as cm:
                m.fit(x, y, lr=1e6, epochs=50, batch=8)
            self.assertIn("diverged at step", str(cm.exception))
        finally:
            m.close()

    def test_scale_factor_inf_refused(self):
        with aims.Pipeline() as p:
            p.add("scale")
            self.assertAimsError(E_RANGE, p.set_step, 0, factor=float("inf"))


if __name__ == "__main__":
    unittest.main()
