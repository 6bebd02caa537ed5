"""Pipelines (aims_pipeline.h): preprocessing steps with fitted state.

Step kinds come from the generated enum table (_enums); step parameters are set
by name through the shared typed setter (_core._set_typed).
"""

import ctypes

from . import _enums
from ._arrays import _float_matrix, _float_out, _texts
from ._core import _enum, _get_typed, _set_typed
from ._data import Dataset, _dataset_ptr
from ._errors import _check
from ._handle import _Handle, _Params, _Stored, _errmsg_property, _new_handle
from ._lib import lib as _c


class StepKind:
    """aims_step_kind values."""


_STEP_KINDS = _enums.names("enum aims_step_kind")
for _name, _value in _STEP_KINDS.items():
    setattr(StepKind, _name.upper(), _value)
del _name, _value
_STEP_NAMES = _enums.values("enum aims_step_kind")


def _step_kind(kind):
    return _enum(kind, _STEP_KINDS, "step kind")


class Pipeline(_Stored, _Params, _Handle):
    """Preprocessing steps with fitted state (aims_pipeline).

    >>> p = Pipeline()
    >>> p.add("impute", strategy=1)            # parameters by name
    >>> p.add("standardize", col_begin=0, col_end=2)
    """

    _kind = "Pipeline"
    _c_prefix = "aims_pipeline"

    def __init__(self, steps=()):
        self._adopt(_new_handle(_c.aims_pipeline_create))
        for step in steps:
            if isinstance(step, (tuple, list)):
                kind, params = step[0], (step[1] if len(step) > 1 else {})
                self.add(kind, **params)
            else:
                self.add(step)

    # ---- configuration ---------------------------------------------------------
    def add(self, kind, **params):
        """Append a step ("standardize", "minmax", "impute", "clip", "onehot",
        "scale", "normalize", "tokenize", "ngrams", "hash", "tfidf") with
        parameters by name; returns the step's index."""
        index = ctypes.c_size_t()
        self._call(_c.aims_pipeline_add, _step_kind(kind), ctypes.byref(index))
        if params:
            self.set_step(index.value, **params)
        return index.value

    def set_step(self, step, **params):
        """Set step parameters by name (typed setter from aims_param_info); returns self."""
        for name, value in params.items():
            _set_typed(self._ptr, _STEP_SETTERS, self._c_errmsg, name, value, (int(step),))
        return self

    def get_step(self, step, name):
        """Read one step parameter by name (int or float by its type)."""
        return _get_typed(self._ptr, _STEP_GETTERS, self._c_errmsg, name, (int(step),))

    @property
    def threads(self):
        """Worker threads for transform (0 = all cores)."""
        return self.get_param("threads")

    @threads.setter
    def threads(self, value):
        self.set_param("threads", value)

    def set_threads(self, value):
        return self.set_param("threads", value)

    # ---- introspection ---------------------------------------------------------
    @property
    def num_steps(self):
        return int(_c.aims_pipeline_num_steps(self._ptr))

    def __len__(self):
        return self.num_steps

    def step_kind(self, step):
        """Name of step ``step``'s kind (e.g. "standardize")."""
        value = int(_c.aims_pipeline_step_kind(self._ptr, int(step)))
        if value == 0:
            raise IndexError("no step %d (pipeline has %d)" % (step, self.num_steps))
        return _STEP_NAMES.get(value, str(value))

    @property
    def steps(self):
        return [self.step_kind(i) for i in range(self.num_steps)]

    @property
    def is_fitted(self):
        return bool(_c.aims_pipeline_is_fitted(self._ptr))

    @property
    def output_cols(self):
        """Output width after fit (dense columns, or token id bound for text)."""
        out = ctypes.c_size_t()
        self._call(_c.aims_pipeline_output_cols, ctypes.byref(out))
        return out.value

    errmsg = _errmsg_property()

    # ---- fit and transform -----------------------------------------------------
    def fit(self, ds):
        """Fit every step on ``ds``; returns self."""
        self._call(_c.aims_pipeline_fit, _dataset_ptr(ds))
        return self

    def transform(self, ds):
        """Apply the fitted pipeline to a Dataset; returns a new Dataset."""
        return Dataset._wrap(_new_handle(_c.aims_pipeline_transform, self._ptr,
                                         _dataset_ptr(ds)))

    def fit_transform(self, ds):
        return Dataset._wrap(_new_handle(_c.aims_pipeline_fit_transform, self._ptr,
                                         _dataset_ptr(ds)))

    def transform_rows(self, x, cols=None):
        """Transform dense rows (numeric pipelines) without building a Dataset.

        Returns a float32 numpy array (rows, output_cols), or without numpy an
        array.array('f') of rows*output_cols values, row-major.
        """
        ptr = self._ptr
        inp = _float_matrix(x, cols, "x")
        rows, in_cols = inp.shape
        result, out_ptr, n = _float_out(rows, self.output_cols)
        _check(_c.aims_pipeline_transform_rows(ptr, inp.ptr, rows, in_cols, out_ptr, n))
        return result

    def transform_texts(self, texts):
        """Transform documents with a fitted text pipeline; returns a Dataset with a
        token part."""
        n, ptrs, lens, keep = _texts(texts)
        out = _new_handle(_c.aims_pipeline_transform_texts, self._ptr, ptrs, lens, n)
        del keep
        return Dataset._wrap(out)

    def __repr__(self):
        if self.closed:
            return "<aims.Pipeline closed>"
        return "<aims.Pipeline steps=%r fitted=%s>" % (self.steps, self.is_fitted)


_STEP_SETTERS = (_c.aims_pipeline_set_step_param_i64, _c.aims_pipeline_set_step_param_f64)
_STEP_GETTERS = (_c.aims_pipeline_get_step_param_i64, _c.aims_pipeline_get_step_param_f64)
