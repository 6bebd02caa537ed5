"""scikit-learn estimators over libaims models: ``aims.sklearn.AimsClassifier``.

Why. People who already have a scikit-learn workflow (pipelines, grid search,
cross-validation, ``score``) should be able to drop a libaims model in without
learning the Dataset/Trainer API. The estimator follows scikit-learn's rules --
parameters only in ``__init__``, fitted state in attributes ending in ``_``,
input checked with ``check_X_y``/``check_array`` (so NaN/inf, sparse, complex,
1-D input raise the errors scikit-learn users expect), ``classes_`` of any
label type, pickling -- and is checked with scikit-learn's own
``check_estimator`` in the test suite (bindings/python/tests/test_sklearn.py).

How. ``fit`` standardises the features (mean/std in float64, kept in
``mean_``/``scale_``; off with ``standardize=False``), trains a SOFTMAX model
(or an MLP when ``hidden_layer_sizes`` is not empty) through ``Model.fit``, and
keeps it in ``model_``. A single-class training set needs no model: every
prediction is that class. Pickling stores the model as the bytes of its saved
file. Progress: pass ``progress=callable`` (called with the Trainer after each
epoch), or ``progress="tqdm"`` for a tqdm bar when tqdm is installed.

Needs numpy and scikit-learn (Debian ``python3-sklearn``).
"""

import os
import tempfile

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from . import Model, Trainer

_OPTIMIZERS = {"sgd": 0, "adam": 1, "adamw": 2}


def _tqdm_progress(epochs):
    try:
        from tqdm import tqdm
    except ImportError:
        return None, None
    bar = tqdm(total=epochs, unit="epoch", leave=False)

    def step(_trainer):
        bar.update(1)
        return False

    return step, bar


class AimsClassifier(ClassifierMixin, BaseEstimator):
    """A libaims softmax (or MLP) classifier with the scikit-learn estimator API.

    Parameters: ``hidden_layer_sizes`` (tuple of widths; empty = softmax
    regression), ``activation`` ("relu", "tanh", "sigmoid"), ``optimizer``
    ("sgd", "adam", "adamw"), ``learning_rate``, ``epochs``, ``batch_size``,
    ``standardize`` (scale features to zero mean, unit variance first),
    ``random_state`` (libaims seed; same seed and data give the same model),
    ``progress`` (None, a callable, or "tqdm").
    """

    def __init__(self, hidden_layer_sizes=(), activation="relu", optimizer="adam",
                 learning_rate=0.05, epochs=50, batch_size=16, standardize=True,
                 random_state=1, progress=None):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.standardize = standardize
        self.random_state = random_state
        self.progress = progress

    # ---- fitting ------------------------------------------------------------------
    def fit(self, X, y):
        X, y = check_X_y(X, y, dtype=np.float64)
        check_classification_targets(y)
        self.classes_, yi = np.unique(y, return_inverse=True)
        self.n_features_in_ = X.shape[1]
        if self.standardize:
            self.mean_ = X.mean(axis=0)
            scale = X.std(axis=0)
            scale[~(scale > 0)] = 1.0
            self.scale_ = scale
        else:
            self.mean_ = np.zeros(X.shape[1])
            self.scale_ = np.ones(X.shape[1])
        self.model_ = None
        if len(self.classes_) < 2:
            return self
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError("optimizer must be one of %s, got %r"
                             % (sorted(_OPTIMIZERS), self.optimizer))
        hidden = tuple(self.hidden_layer_sizes or ())
        model = Model("mlp" if hidden else "softmax", X.shape[1], len(self.classes_),
                      hidden=hidden, activation=self.activation)
        progress, bar = self.progress, None
        if progress == "tqdm":
            progress, bar = _tqdm_progress(int(self.epochs))
        try:
            with Trainer(model, progress=progress, optimizer=_OPTIMIZERS[self.optimizer],
                         lr=float(self.learning_rate), epochs=int(self.epochs),
                         batch=max(1, min(int(self.batch_size), X.shape[0])),
                         seed=int(self.random_state)) as t:
                t.fit(self._dataset(X, yi))
        except Exception:
            model.close()
            raise
        finally:
            if bar is not None:
                bar.close()
        self.model_ = model
        return self

    def _scaled(self, X):
        return np.ascontiguousarray((X - self.mean_) / self.scale_, dtype=np.float32)

    def _dataset(self, X, yi):
        from . import Dataset
        return Dataset.from_dense(self._scaled(X), labels=yi.astype(np.int32))

    def _check_input(self, X):
        check_is_fitted(self, "classes_")
        X = check_array(X, dtype=np.float64)
        if X.shape[1] != self.n_features_in_:
            raise ValueError("X has %d features, but %s is expecting %d features as input."
                             % (X.shape[1], type(self).__name__, self.n_features_in_))
        return X

    # ---- prediction ---------------------------------------------------------------
    def predict_proba(self, X):
        X = self._check_input(X)
        if self.model_ is None:
            return np.ones((X.shape[0], 1))
        if X.shape[0] == 0:
            return np.zeros((0, len(self.classes_)))
        return np.asarray(self.model_.predict(self._scaled(X), proba=True), dtype=np.float64)

    def predict(self, X):
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    # ---- pickling: the model travels as the bytes of its saved file -----------------
    def __getstate__(self):
        state = dict(self.__dict__)
        model = state.pop("model_", None)
        if model is not None:
            fd, path = tempfile.mkstemp(suffix=".aimsm")
            os.close(fd)
            try:
                model.save(path)
                with open(path, "rb") as f:
                    state["_model_bytes"] = f.read()
            finally:
                os.unlink(path)
        elif "classes_" in state:
            state["_model_bytes"] = None
        return state

    def __setstate__(self, state):
        state = dict(state)
        if "_model_bytes" in state:
            data = state.pop("_model_bytes")
            state["model_"] = Model.parse(data) if data is not None else None
        self.__dict__.update(state)

    def _more_tags(self):
        return {"binary_only": False, "requires_y": True}
