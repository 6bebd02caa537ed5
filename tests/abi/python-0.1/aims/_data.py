"""Datasets and loader options (aims_dataset.h).

A Dataset wraps one immutable aims_dataset: built by the loaders (parse, load,
load_idx, load_topics), from memory (from_dense, from_texts) or from another
dataset (view, select, split); its columns are exported zero-copy (_arrays).
Format values come from the generated enum table (_enums), not from a copy.
"""

import ctypes

from . import _enums
from . import _lib
from ._arrays import _borrow, _bytes_arg, _float_matrix, _int32_vector, _np, _texts
from ._errors import _check
from ._handle import _Handle, _errmsg_property, _new_handle, _path
from ._lib import lib as _c


# ---------------------------------------------------------------------------------
# Loader options

class LoadOptions(_Handle):
    """Loader options (aims_loadopts). ``LoadOptions(delimiter=";", header=1)``."""

    _kind = "LoadOptions"
    _c_prefix = "aims_loadopts"
    _c_setters = (_c.aims_loadopts_set_param_i64, None)
    _c_getters = (_c.aims_loadopts_get_param_i64, None)

    def __init__(self, **options):
        self._adopt(_new_handle(_c.aims_loadopts_create))
        for name, value in options.items():
            self.set(name, value)

    def set(self, name, value):
        """Set an integer loader option by name; returns self."""
        self._set_param(name, value)
        return self

    def get(self, name):
        """Read an integer loader option by name."""
        return self._get_param(name)

    def __repr__(self):
        return "<aims.LoadOptions%s>" % (" closed" if self.closed else "")


def _with_opts(options, kwargs):
    """(handle-or-None, temporary) for an ``options=`` object and/or keyword options."""
    if options is not None and kwargs:
        raise TypeError("pass either options= or keyword options, not both")
    if options is not None:
        if not isinstance(options, LoadOptions):
            raise TypeError("options must be a LoadOptions, got %r" % (type(options),))
        return options, None
    if kwargs:
        tmp = LoadOptions(**kwargs)
        return tmp, tmp
    return None, None


def _load_with(call, options, opts, *args):
    """call(*args, loadopts-or-NULL, &out) with an ``options=`` object or keyword
    options (a temporary LoadOptions); returns the new handle."""
    lo, tmp = _with_opts(options, opts)
    try:
        return _new_handle(call, *args, lo._ptr if lo is not None else None)
    finally:
        if tmp is not None:
            tmp.close()


# ---------------------------------------------------------------------------------
# Datasets

class Format:
    """aims_format values."""


for _name, _value in _enums.names("enum aims_format").items():
    setattr(Format, _name.upper(), _value)
del _name, _value

_FORMATS = dict(_enums.names("enum aims_format"), libsvm=Format.SVMLIGHT)


def _format(fmt):
    if isinstance(fmt, str):
        try:
            return _FORMATS[fmt.lower()]
        except KeyError:
            raise ValueError("unknown format %r (one of %s)"
                             % (fmt, ", ".join(sorted(_FORMATS)))) from None
    return int(fmt)


class Dataset(_Handle):
    """An immutable table of examples (aims_dataset): dense features and/or a
    token part, raw text, and class labels or float targets.

    Build with the classmethods (parse, load, load_idx, load_topics, from_dense,
    from_texts) or from another dataset (view, select, split, Pipeline.transform).
    """

    _kind = "Dataset"
    _c_prefix = "aims_dataset"
    _no_init = "use Dataset.parse/load/load_idx/load_topics/from_dense/from_texts"

    # ---- constructors ----------------------------------------------------------
    @classmethod
    def parse(cls, fmt, data, options=None, **opts):
        """Parse bytes in memory. ``fmt``: "csv", "svmlight", "text", "idx", "aims"
        (or a Format value); keyword options are loader options by name."""
        ptr_arg, size, keep = _bytes_arg(data)
        out = _load_with(_c.aims_dataset_parse, options, opts, _format(fmt), ptr_arg, size)
        del keep
        return cls._wrap(out)

    @classmethod
    def load(cls, fmt, path, options=None, **opts):
        """Load a file in format ``fmt`` (see parse)."""
        return cls._wrap(_load_with(_c.aims_dataset_load_file, options, opts, _format(fmt),
                                    _path(path)))

    @classmethod
    def load_idx(cls, images, labels=None, options=None, **opts):
        """Load an IDX image file and optionally its IDX label file."""
        return cls._wrap(_load_with(_c.aims_dataset_load_idx, options, opts, _path(images),
                                    _path(labels) if labels is not None else None))

    @classmethod
    def load_topics(cls, directory, options=None, **opts):
        """Load a one-topic-per-file directory (fortunes layout); e.g. min_docs=5."""
        return cls._wrap(_load_with(_c.aims_dataset_load_topics, options, opts,
                                    _path(directory)))

    @classmethod
    def from_dense(cls, x, labels=None, cols=None, allow_nonfinite=False):
        """Copy a rows x cols float matrix (and optional int class ids) into a dataset.

        ``x``: 2-D numpy array / nested lists / 2-D buffer; 1-D input is one row
        unless ``cols`` is given. NaN or inf in ``x`` raise AimsError naming the
        row and column, unless ``allow_nonfinite`` (e.g. NaN as missing values
        for an IMPUTE step).
        """
        inp = _float_matrix(x, cols, "x")
        rows, ncols = inp.shape
        lab = _int32_vector(labels, rows, "labels")
        with LoadOptions(allow_nonfinite=1 if allow_nonfinite else 0) as lo:
            out = _new_handle(_c.aims_dataset_create_dense_v2, rows, ncols, inp.ptr,
                              lab.ptr if lab is not None else None, lo._ptr)
        return cls._wrap(out)

    @classmethod
    def from_texts(cls, texts, labels=None):
        """Copy a list of documents (str, UTF-8 encoded; or bytes) into a text dataset."""
        n, ptrs, lens, keep = _texts(texts)
        lab = _int32_vector(labels, n, "labels")
        out = _new_handle(_c.aims_dataset_create_texts, n, ptrs, lens,
                          lab.ptr if lab is not None else None)
        del keep
        return cls._wrap(out)

    # ---- shape and metadata ----------------------------------------------------
    @property
    def rows(self):
        return int(_c.aims_dataset_rows(self._ptr))

    def __len__(self):
        return self.rows

    @property
    def cols(self):
        """Dense feature columns; 0 without a dense part."""
        return int(_c.aims_dataset_cols(self._ptr))

    @property
    def num_classes(self):
        return int(_c.aims_dataset_num_classes(self._ptr))

    @property
    def class_names(self):
        """List of class names (str); [] when the dataset has none."""
        ptr = self._ptr
        names = []
        for k in range(int(_c.aims_dataset_num_classes(ptr))):
            raw = _c.aims_dataset_class_name(ptr, k)
            if raw is None:
                return [] if k == 0 else names
            names.append(raw.decode("utf-8", "replace"))
        return names

    @property
    def token_dim(self):
        """Upper bound on token ids; 0 without a token part."""
        return int(_c.aims_dataset_token_dim(self._ptr))

    errmsg = _errmsg_property()

    # ---- zero-copy accessors ---------------------------------------------------
    def features(self):
        """Dense features, shape (rows, cols) float32, read-only and zero-copy; None
        without a dense part."""
        ptr = self._ptr
        addr = _c.aims_dataset_features(ptr)
        if not addr:
            return None
        rows, cols = int(_c.aims_dataset_rows(ptr)), int(_c.aims_dataset_cols(ptr))
        return _borrow(addr, ctypes.c_float, rows * cols, self._owner, (rows, cols))

    def _column(self, getter, ctype):
        """One value per row from ``getter`` (zero-copy), or None when absent."""
        ptr = self._ptr
        addr = getter(ptr)
        if not addr:
            return None
        return _borrow(addr, ctype, int(_c.aims_dataset_rows(ptr)), self._owner)

    def labels(self):
        """Class ids, shape (rows,) int32, read-only and zero-copy; None without labels."""
        return self._column(_c.aims_dataset_labels, ctypes.c_int32)

    def targets(self):
        """Float targets, shape (rows,) float32, zero-copy; None without targets."""
        return self._column(_c.aims_dataset_targets, ctypes.c_float)

    def tokens(self):
        """The token part as (offsets, ids, weights), zero-copy.

        offsets: rows+1 uint64; row i's ids are ids[offsets[i]:offsets[i+1]] (for a
        view offsets[0] need not be 0). ids: uint32; weights: float32 or None.
        Raises AimsError(AIMS_E_STATE) when the dataset has no token part.
        """
        ptr = self._ptr
        offs, ids, weights = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        self._call(_c.aims_dataset_tokens, ctypes.byref(offs), ctypes.byref(ids),
                   ctypes.byref(weights))
        rows = int(_c.aims_dataset_rows(ptr))
        offsets = _borrow(offs.value, ctypes.c_uint64, rows + 1, self._owner)
        end = int(offsets[rows]) if rows + 1 > 0 and offsets is not None else 0
        ids_arr = _borrow(ids.value, ctypes.c_uint32, end, self._owner)
        w_arr = (_borrow(weights.value, ctypes.c_float, end, self._owner)
                 if weights.value else None)
        return offsets, ids_arr, w_arr

    def text(self, i, raw=False):
        """Raw text of row ``i`` as str (bytes with raw=True); None without a text part."""
        ptr = self._ptr
        rows = int(_c.aims_dataset_rows(ptr))
        i = int(i)
        if i < 0:
            i += rows
        if not 0 <= i < rows:
            raise IndexError("row %d out of range for %d rows" % (i, rows))
        n = ctypes.c_size_t()
        addr = _c.aims_dataset_text(ptr, i, ctypes.byref(n))
        if not addr:
            return None
        data = ctypes.string_at(addr, n.value)
        return data if raw else data.decode("utf-8", "replace")

    def texts(self):
        """All rows' text as a list of str (None entries without a text part)."""
        return [self.text(i) for i in range(self.rows)]

    # ---- derived datasets ------------------------------------------------------
    def shuffle(self, seed):
        """Shuffle rows in place (same seed, same order); returns self.
        AIMS_E_STATE when this is a view or has live views."""
        self._call(_c.aims_dataset_shuffle, int(seed) & 0xFFFFFFFFFFFFFFFF)
        return self

    def view(self, begin, count):
        """Zero-copy view of rows [begin, begin+count)."""
        if begin < 0 or count < 0:
            raise ValueError("begin and count must be >= 0")
        out = _new_handle(_c.aims_dataset_view, self._ptr, int(begin), int(count))
        view = Dataset._wrap(out, parent=self._owner)
        # The C view holds a reference on the parent; the Python side keeps both the
        # parent's owner (for arrays borrowed through the view) and the parent object.
        view._parent = self
        return view

    def select(self, idx):
        """Copy of the rows listed in ``idx`` (in that order)."""
        if _np is not None:
            arr = _np.asarray(idx).reshape(-1)
            if arr.size and (arr.dtype.kind not in "iu" or arr.min() < 0):
                raise ValueError("idx must hold non-negative integers")
            arr = _np.ascontiguousarray(arr, dtype=_np.uintp)
            n, cptr = arr.shape[0], arr.ctypes.data_as(_lib.sizep)
            keep = arr
        else:
            values = [int(v) for v in idx]
            if any(v < 0 for v in values):
                raise ValueError("idx must hold non-negative integers")
            keep = (ctypes.c_size_t * max(len(values), 1))(*values)
            n, cptr = len(values), keep
        out = _new_handle(_c.aims_dataset_select, self._ptr, cptr, n)
        del keep
        return Dataset._wrap(out)

    def split(self, test_fraction, seed=0, stratified=True):
        """(train, test) copies; stratified by class unless stratified=False."""
        train, test = ctypes.c_void_p(), ctypes.c_void_p()
        _check(_c.aims_dataset_split(self._ptr, float(test_fraction),
                                     int(seed) & 0xFFFFFFFFFFFFFFFF, 1 if stratified else 0,
                                     ctypes.byref(train), ctypes.byref(test)))
        return Dataset._wrap(train.value), Dataset._wrap(test.value)

    def save(self, path):
        """Save in the libaims container format (atomic write); load with
        Dataset.load("aims", path)."""
        self._call(_c.aims_dataset_save, _path(path))

    def __repr__(self):
        if self.closed:
            return "<aims.Dataset closed>"
        return "<aims.Dataset rows=%d cols=%d classes=%d token_dim=%d>" % (
            self.rows, self.cols, self.num_classes, self.token_dim)


# ---------------------------------------------------------------------------------


def _dataset_ptr(ds):
    if not isinstance(ds, Dataset):
        raise TypeError("expected an aims.Dataset, got %s" % type(ds).__name__)
    return ds._ptr
