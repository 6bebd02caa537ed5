"""aims.sklearn.AimsClassifier against scikit-learn's own estimator checks
(check_estimator), plus fit/predict/score/get_params/set_params, pickling and
use inside a scikit-learn Pipeline on real data (sklearn's iris/wine CSVs)."""

import pickle
import unittest
import warnings

try:
    import numpy as np
    import sklearn  # noqa: F401
    from sklearn.utils.estimator_checks import check_estimator
    from aims.sklearn import AimsClassifier
except ImportError:  # numpy or scikit-learn missing: Debian python3-sklearn
    AimsClassifier = None


@unittest.skipIf(AimsClassifier is None, "numpy and scikit-learn are needed")
class SklearnTest(unittest.TestCase):
    def test_check_estimator(self):
        failures = []
        ran = 0
        for est, check in check_estimator(AimsClassifier(), generate_only=True):
            name = getattr(check, "func", check).__name__
            ran += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    check(est)
            except unittest.SkipTest:
                continue
            except Exception as exc:  # collect all, report together
                failures.append("%s: %s: %s" % (name, type(exc).__name__, exc))
        self.assertGreater(ran, 30)
        self.assertEqual(failures, [], "\n".join(failures))

    def test_real_data_pipeline_score_params_pickle(self):
        from sklearn.datasets import load_wine
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        X, y = load_wine(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
        clf = AimsClassifier(epochs=40, hidden_layer_sizes=(16,))
        self.assertEqual(clf.get_params()["epochs"], 40)
        clf.set_params(learning_rate=0.02)
        pipe = make_pipeline(StandardScaler(), clf).fit(Xtr, ytr)
        acc = pipe.score(Xte, yte)
        self.assertGreater(acc, 0.85)
        proba = pipe.predict_proba(Xte)
        self.assertEqual(proba.shape, (len(yte), 3))
        self.assertTrue(np.allclose(proba.sum(axis=1), 1.0, atol=1e-4))
        again = pickle.loads(pickle.dumps(pipe))
        self.assertTrue((again.predict(Xte) == pipe.predict(Xte)).all())
        # string labels come back as given
        names = np.array(["a", "b", "c"])[y]
        fitted = AimsClassifier(epochs=10).fit(X, names)
        self.assertEqual(set(fitted.predict(X[:20])) <= {"a", "b", "c"}, True)
        with self.assertRaises(ValueError):
            AimsClassifier().fit(np.where(X > 1000, np.nan, X), y)


if __name__ == "__main__":
    unittest.main()
