"""Models, training, evaluation and bundles (aims_model.h).

Model kinds, activations, outputs, metrics and trainer statistics come from the
generated enum table (_enums); parameters are set by name through the shared
typed setter of the handle base (_handle._Handle._set_param).
"""

import array as _array
import ctypes

from . import _enums
from . import _lib
from ._arrays import _ARRAY_CODE, _addr_of, _float_matrix, _float_out, _np, _texts
from ._core import _enum
from ._data import Dataset, _dataset_ptr
from ._errors import AimsError, _check, _decode, _status
from ._handle import _Handle, _Params, _Stored, _errmsg_property, _new_handle, _noop_destroy, \
    _path, _ptr_or_none
from ._lib import lib as _c
from ._pipeline import Pipeline

_MODEL_KINDS = _enums.names("enum aims_model_kind")
_MODEL_KIND_NAMES = _enums.values("enum aims_model_kind")
_ACTIVATIONS = _enums.names("enum aims_activation")
_OUTPUTS = _enums.names("enum aims_output")
_OUT_SCORES, _OUT_PROBA = _OUTPUTS["scores"], _OUTPUTS["proba"]
#: aims_eval_metric values by name (Eval.get)
METRICS = _enums.names("enum aims_eval_metric")
#: aims_trainer_stat values by name (Trainer.stat)
STATS = _enums.names("enum aims_trainer_stat")
_E_UNSUPPORTED = _status("AIMS_E_UNSUPPORTED")


def _what(proba):
    return _OUT_PROBA if proba else _OUT_SCORES


class Eval(_Handle):
    """Evaluation results (aims_eval): typed metrics and the confusion matrix.

    ``ev.accuracy``, ``ev.macro_f1``, ``ev.log_loss`` (classifiers), ``ev.mse``,
    ``ev.r2`` (regression), ``ev.rows``; ``ev.get(name)`` raises AimsError
    (AIMS_E_UNSUPPORTED) for a metric that does not apply; ``ev.as_dict()`` holds
    the ones that do.
    """

    _kind = "Eval"
    _c_prefix = "aims_eval"
    _no_init = "Eval objects come from Model.evaluate()"

    def get(self, metric):
        out = ctypes.c_double()
        _check(_c.aims_eval_get_metric(self._ptr, _enum(metric, METRICS, "metric"),
                                       ctypes.byref(out)))
        return out.value

    accuracy = property(lambda self: self.get("accuracy"))
    macro_f1 = property(lambda self: self.get("macro_f1"))
    log_loss = property(lambda self: self.get("log_loss"))
    mse = property(lambda self: self.get("mse"))
    r2 = property(lambda self: self.get("r2"))
    rows = property(lambda self: int(self.get("rows")))

    @property
    def num_classes(self):
        return int(_c.aims_eval_num_classes(self._ptr))

    def confusion(self):
        """k x k counts, [true][predicted]: an int64 numpy array, or a list of lists."""
        k = self.num_classes
        buf = (ctypes.c_int64 * max(k * k, 1))()
        _check(_c.aims_eval_get_confusion(self._ptr, buf, k * k))
        if _np is not None:
            return _np.ctypeslib.as_array(buf)[:k * k].reshape(k, k).copy()
        return [list(buf[i * k:(i + 1) * k]) for i in range(k)]

    def as_dict(self):
        out = {}
        for name in METRICS:
            try:
                out[name] = self.get(name)
            except AimsError as exc:
                if exc.code != _E_UNSUPPORTED:  # metric does not apply
                    raise
        return out

    def __repr__(self):
        if self.closed:
            return "<aims.Eval closed>"
        return "<aims.Eval %r>" % self.as_dict()


class Model(_Stored, _Params, _Handle):
    """A model (aims_model): linear, logistic, softmax, MLP or TEXT.

    >>> m = Model("mlp", 784, 10, hidden=[256], activation="relu")
    >>> Trainer(m, epochs=5, lr=0.1).fit(train)
    >>> m.evaluate(test).accuracy
    >>> m.predict(x, proba=True)          # float32 (rows, classes), written by C

    Parameters are addressed by name (``dropout``, ``loss``, ``embed_dim``,
    ``model_threads``, ``precision``). Predict and evaluate may run from many
    threads at once; configuration and training need exclusive access.
    """

    _kind = "Model"
    _c_prefix = "aims_model"

    def __init__(self, kind, input_dim, output_dim, hidden=(), activation="relu", **params):
        ptr = _new_handle(_c.aims_model_create, _enum(kind, _MODEL_KINDS, "model kind"),
                          int(input_dim), int(output_dim))
        self._adopt(ptr)
        for layer in hidden:
            if isinstance(layer, (tuple, list)):
                self.add_dense(layer[0], layer[1] if len(layer) > 1 else activation)
            else:
                self.add_dense(layer, activation)
        for name, value in params.items():
            self.set_param(name, value)

    # ---- configuration ---------------------------------------------------------
    def add_dense(self, units, activation="relu"):
        """Append a hidden layer (MLP, before training); returns self."""
        self._call(_c.aims_model_add_dense, int(units),
                   _enum(activation, _ACTIVATIONS, "activation"))
        return self

    # ---- introspection ---------------------------------------------------------
    @property
    def kind(self):
        """"linear", "logistic", "softmax", "mlp" or "text"."""
        value = int(_c.aims_model_kind_of(self._ptr))
        return _MODEL_KIND_NAMES.get(value, str(value))

    input_dim = property(lambda self: int(_c.aims_model_input_dim(self._ptr)))
    output_dim = property(lambda self: int(_c.aims_model_output_dim(self._ptr)))
    num_params = property(lambda self: int(_c.aims_model_num_params(self._ptr)))
    is_trained = property(lambda self: bool(_c.aims_model_is_trained(self._ptr)))
    is_quantized = property(lambda self: bool(_c.aims_model_is_quantized(self._ptr)))
    errmsg = _errmsg_property()

    # ---- inference ---------------------------------------------------------------
    def predict(self, x, proba=False, cols=None):
        """Scores (or probabilities) for dense rows: float32 (rows, output_dim), or
        without numpy an array.array('f') of rows*output_dim values."""
        ptr = self._ptr
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        result, out_ptr, cap = _float_out(rows, self.output_dim)
        _check(_c.aims_model_predict(ptr, _what(proba), inp.ptr, rows, in_cols, out_ptr, cap),
               self._c_errmsg, ptr)
        return result

    def predict_proba(self, x, cols=None):
        return self.predict(x, proba=True, cols=cols)

    def predict_class(self, x, cols=None):
        """Class ids for dense rows: int32 numpy array (rows,), or array.array."""
        ptr = self._ptr
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        if _np is not None:
            result = _np.empty((rows,), dtype=_np.int32)
            out_ptr = result.ctypes.data_as(_lib.i32p)
        else:
            result = _array.array(_ARRAY_CODE[ctypes.c_int32], bytes(4 * rows))
            out_ptr = _addr_of(result, _lib.i32p)
        _check(_c.aims_model_predict_class(ptr, inp.ptr, rows, in_cols, out_ptr, rows),
               self._c_errmsg, ptr)
        return result

    def predict_dataset(self, ds, proba=False):
        """Scores / probabilities for every row of a Dataset (dense or token part)."""
        result, out_ptr, cap = _float_out(len(ds), self.output_dim)
        self._call(_c.aims_model_predict_dataset, _what(proba), _dataset_ptr(ds), out_ptr, cap)
        return result

    def evaluate(self, ds):
        """Metrics on a labelled Dataset; returns an Eval."""
        return Eval._wrap(_new_handle(_c.aims_model_evaluate, self._ptr, _dataset_ptr(ds)))

    # ---- copies, optimization, persistence ----------------------------------------
    def clone(self):
        return Model._wrap(_new_handle(_c.aims_model_clone, self._ptr))

    def quantize(self, calib):
        """int8 copy of the model calibrated on a Dataset; returns a new Model."""
        return Model._wrap(_new_handle(_c.aims_model_quantize, self._ptr,
                                       _dataset_ptr(calib)))

    # ---- convenience -------------------------------------------------------------
    def fit(self, train, val=None, progress=None, **trainer_params):
        """Train with a temporary Trainer (parameters by name); returns self.

        ``fit(train_ds, val_ds)`` with Datasets, or ``fit(X, y)`` with arrays: X
        rows x cols floats, y the rows' class ids (copied into a Dataset).
        """
        if not isinstance(train, Dataset):
            train, val = Dataset.from_dense(train, labels=val), None
        with Trainer(self, progress=progress, **trainer_params) as t:
            t.fit(train, val)
        return self

    def __repr__(self):
        if self.closed:
            return "<aims.Model closed>"
        return "<aims.Model %s %d->%d trained=%s quantized=%s>" % (
            self.kind, self.input_dim, self.output_dim, self.is_trained, self.is_quantized)


class Trainer(_Params, _Handle):
    """Trains a Model (aims_trainer): step-wise or to the end.

    >>> t = Trainer(model, optimizer=1, lr=1e-3, epochs=5, batch=128, seed=1)
    >>> t.fit(train, val)                       # or: t.begin(train); t.step() ...
    >>> t.stat("val_accuracy")

    Progress: ``progress(trainer)`` is called after every epoch on the training
    thread; a truthy return stops the run (fit raises AimsError AIMS_E_CANCELLED),
    an exception raised inside it stops the run and is re-raised by the call that
    was training. The trainer keeps the callback, the model and the datasets of the
    current run alive. The GIL is released while C trains and re-acquired only for
    the callback, so other Python threads run (and may call cancel()).
    """

    _kind = "Trainer"
    _c_prefix = "aims_trainer"

    def __init__(self, model, progress=None, **params):
        if not isinstance(model, Model):
            raise TypeError("expected an aims.Model, got %s" % type(model).__name__)
        # The C trainer borrows the model: its owner is the trainer handle's parent,
        # so the model is destroyed only after the trainer, whatever the Python
        # objects' order of collection or model.close().
        self._adopt(_new_handle(_c.aims_trainer_create, model._ptr), parent=model._owner)
        self._model = model
        self._datasets = ()
        self._progress = None
        self._progress_c = None
        self._progress_exc = None
        for name, value in params.items():
            self.set_param(name, value)
        if progress is not None:
            self.set_progress(progress)

    def _call(self, fn, *args):
        ptr = self._ptr
        rc = fn(ptr, *args)
        exc, self._progress_exc = self._progress_exc, None
        if exc is not None:
            raise exc
        _check(rc, self._c_errmsg, ptr)

    @property
    def model(self):
        return self._model

    def set_progress(self, callback):
        """Install ``callback(trainer) -> stop?`` (None removes it); returns self."""
        if callback is None:
            self._call(_c.aims_trainer_set_progress_fn, _lib.progress_fn(), None)
            self._progress = self._progress_c = None
            return self

        def _trampoline(_user, _t):
            try:
                return 1 if callback(self) else 0
            except BaseException as exc:  # surfaced by the training call
                self._progress_exc = exc
                return 1
        cfn = _lib.progress_fn(_trampoline)
        self._call(_c.aims_trainer_set_progress_fn, cfn, None)
        # C keeps the function pointer: the thunk must live as long as the trainer.
        self._progress, self._progress_c = callback, cfn
        return self

    def stat(self, name):
        out = ctypes.c_double()
        ptr = self._ptr
        _check(_c.aims_trainer_get_stat(ptr, _enum(name, STATS, "stat"), ctypes.byref(out)),
               self._c_errmsg, ptr)
        return out.value

    @property
    def stats(self):
        """All progress values as a dict (NaN where not available)."""
        return {name: self.stat(name) for name in STATS}

    def _run_args(self, train, val):
        self._datasets = (train._owner, val._owner if val is not None else None)
        return _dataset_ptr(train), (_dataset_ptr(val) if val is not None else None)

    def begin(self, train, val=None):
        """Start a run (weights, optimizer state, data order); returns self."""
        tp, vp = self._run_args(train, val)
        self._call(_c.aims_trainer_begin, tp, vp)
        return self

    def step(self):
        """One optimizer step; returns True when the run is over."""
        done = ctypes.c_int()
        self._call(_c.aims_trainer_step, ctypes.byref(done))
        return bool(done.value)

    def epoch(self):
        """Steps to the end of the epoch; returns True when the run is over."""
        done = ctypes.c_int()
        self._call(_c.aims_trainer_epoch, ctypes.byref(done))
        return bool(done.value)

    def fit(self, train, val=None):
        """Run to the end; returns self."""
        tp, vp = self._run_args(train, val)
        self._call(_c.aims_trainer_fit, tp, vp)
        return self

    def cancel(self):
        """Stop a running fit/step/epoch at the next step boundary (any thread)."""
        _c.aims_trainer_cancel(self._ptr)

    def checkpoint(self, path):
        self._call(_c.aims_trainer_checkpoint, _path(path))

    def set_shards(self, shards):
        """Cut every batch into ``shards`` shards summed in shard order: the
        one-process reference of an MPI run over that many ranks (aims_dist.h,
        docs/MPI.md); returns self."""
        self._call(_c.aims_trainer_set_shards, int(shards))
        return self

    def set_mpi(self, enable=True):
        """Train data-parallel over the ranks of MPI_COMM_WORLD (MPI started by
        the host or aims_init_mpi); returns self."""
        self._call(_c.aims_trainer_set_mpi, 1 if enable else 0)
        return self

    def restore(self, path):
        self._call(_c.aims_trainer_restore, _path(path))

    errmsg = _errmsg_property()

    def close(self):
        super().close()
        self._datasets = ()

    def __repr__(self):
        if self.closed:
            return "<aims.Trainer closed>"
        return "<aims.Trainer epoch=%g step=%g>" % (self.stat("epoch"), self.stat("step"))


class Bundle(_Stored, _Handle):
    """A fitted pipeline (or none) + a trained model + metadata, in one file.

    >>> b = Bundle(pipeline, model, name="fmnist", version="1")
    >>> b.save("m.aims"); b2 = Bundle.load("m.aims")
    >>> b2.predict_rows(raw_rows, proba=True); b2.predict_texts(["some text"])
    """

    _kind = "Bundle"
    _c_prefix = "aims_bundle"

    def __init__(self, pipeline, model, **meta):
        pp = _ptr_or_none(pipeline, Pipeline)
        if not isinstance(model, Model):
            raise TypeError("expected an aims.Model, got %s" % type(model).__name__)
        self._adopt(_new_handle(_c.aims_bundle_create, pp, model._ptr))
        for key, value in meta.items():
            self.set_meta(key, value)

    def set_meta(self, key, value):
        _check(_c.aims_bundle_set_meta(self._ptr, str(key).encode("utf-8"),
                                       str(value).encode("utf-8")))
        return self

    def get_meta(self, key, default=None):
        raw = _c.aims_bundle_meta(self._ptr, str(key).encode("utf-8"))
        return _decode(raw) if raw is not None else default

    @property
    def model(self):
        """The bundle's model (borrowed: keeps the bundle alive; do not train it)."""
        ptr = _c.aims_bundle_model(self._ptr)
        return Model._wrap(ptr, _noop_destroy, self._owner) if ptr else None

    @property
    def pipeline(self):
        """The bundle's pipeline (borrowed), or None."""
        ptr = _c.aims_bundle_pipeline(self._ptr)
        if not ptr:
            return None
        return Pipeline._wrap(ptr, _noop_destroy, self._owner)

    def _out_dim(self):
        return int(_c.aims_model_output_dim(_c.aims_bundle_model(self._ptr)))

    def predict_rows(self, x, proba=False, cols=None):
        """Raw dense rows -> pipeline -> model; float32 (rows, output_dim)."""
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        result, out_ptr, cap = _float_out(rows, self._out_dim())
        _check(_c.aims_bundle_predict_rows(self._ptr, _what(proba), inp.ptr, rows, in_cols,
                                           out_ptr, cap))
        return result

    def predict_texts(self, texts, proba=False):
        """Raw documents -> text pipeline -> model; float32 (len(texts), output_dim)."""
        n, ptrs, lens, keep = _texts(texts)
        result, out_ptr, cap = _float_out(n, self._out_dim())
        _check(_c.aims_bundle_predict_texts(self._ptr, _what(proba), ptrs, lens, n, out_ptr,
                                            cap))
        del keep
        return result

    def __repr__(self):
        if self.closed:
            return "<aims.Bundle closed>"
        return "<aims.Bundle name=%r model=%r>" % (self.get_meta("name"), self.model)


# ---------------------------------------------------------------------------------
