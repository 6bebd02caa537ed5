"""Datasets: every loader from small bytes and files, errors, views, copies,
persistence, zero-copy exports, lifetime."""

import array
import ctypes
import gc
import os
import shutil
import sys
import tempfile
import unittest
from unittest import mock

import aims
from aims import _lib

from aims_testutil import LeakCheckCase, idx_bytes, numpy, to_list

CSV = b"1,2,0\n3,4,1\n5,6,0\n7,8,1\n"


class TempDirCase(LeakCheckCase):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="aims_py_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path


class CsvTest(TempDirCase):
    def test_parse_dense_with_label_column(self):
        with aims.Dataset.parse("csv", CSV, label_column=-2) as ds:
            self.assertEqual((ds.rows, ds.cols, len(ds)), (4, 2, 4))
            self.assertEqual(to_list(ds.features()), [[1, 2], [3, 4], [5, 6], [7, 8]])
            self.assertEqual(to_list(ds.labels()), [0, 1, 0, 1])
            self.assertEqual(ds.num_classes, 2)
            self.assertIsNone(ds.targets())

    def test_options_object_header_and_delimiter(self):
        data = b"a;b;y\n1.5;2;0.25\n3;4;0.5\n"
        with aims.LoadOptions(delimiter=";", header=1, label_column=2, label_kind=1) as opts:
            with aims.Dataset.parse(aims.Format.CSV, data, options=opts) as ds:
                self.assertEqual(to_list(ds.features()), [[1.5, 2], [3, 4]])
                self.assertEqual(to_list(ds.targets()), [0.25, 0.5])
                self.assertIsNone(ds.labels())

    def test_options_and_kwargs_conflict(self):
        with aims.LoadOptions() as opts:
            with self.assertRaises(TypeError):
                aims.Dataset.parse("csv", CSV, options=opts, header=1)

    def test_missing_values(self):
        with aims.Dataset.parse("csv", b"1,NA\n,4\n") as ds:
            f = to_list(ds.features())
            self.assertEqual(f[0][0], 1)
            self.assertNotEqual(f[0][1], f[0][1])  # NaN
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "csv",
                                   b"1,NA\n,4\n", missing=0)
        self.assertTrue(err.message)

    def test_ragged_rows_are_corrupt(self):
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "csv",
                                   b"1,2,3\n4,5\n")
        self.assertIn("2", err.message)  # the line number
        self.assertRegex(err.message.lower(), "field|column")

    def test_gzip_is_refused(self):
        gz = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x00" * 16
        for fmt in ("csv", "svmlight", "text", "idx"):
            err = self.assertAimsError(aims.AIMS_E_UNSUPPORTED, aims.Dataset.parse, fmt, gz)
            self.assertIn("gzip", err.message.lower())

    def test_unknown_format_name(self):
        with self.assertRaises(ValueError):
            aims.Dataset.parse("xml", b"<a/>")

    def test_load_file_and_missing_file(self):
        path = self.write("d.csv", CSV)
        with aims.Dataset.load("csv", path, label_column=-2) as ds:
            self.assertEqual(ds.rows, 4)
        missing = os.path.join(self.tmp, "nope.csv")
        with self.assertRaises(aims.AimsError) as ctx:
            aims.Dataset.load("csv", missing)
        self.assertIn(ctx.exception.name, ("AIMS_E_NOTFOUND", "AIMS_E_IO"))
        self.assertIn("nope.csv", ctx.exception.message)

    def test_buffer_inputs(self):
        for data in (bytearray(CSV), memoryview(CSV), memoryview(bytearray(CSV))):
            with aims.Dataset.parse("csv", data) as ds:
                self.assertEqual((ds.rows, ds.cols), (4, 3))

    def test_empty_input(self):
        self.assertAimsError(aims.AIMS_E_INVAL, aims.Dataset.parse, "csv", b"")


class SvmlightTest(LeakCheckCase):
    def test_tokens(self):
        with aims.Dataset.parse("svmlight", b"1 1:0.5 3:2 # c\n0 2:1\n") as ds:
            self.assertEqual(ds.rows, 2)
            self.assertEqual(to_list(ds.labels()), [1, 0])
            offsets, ids, weights = ds.tokens()
            self.assertEqual(to_list(offsets), [0, 2, 3])
            self.assertEqual(to_list(ids), [0, 2, 1])
            self.assertEqual(to_list(weights), [0.5, 2.0, 1.0])
            self.assertEqual(ds.token_dim, 3)
            self.assertIsNone(ds.features())

    def test_view_offsets_index_the_shared_ids(self):
        with aims.Dataset.parse("svmlight", b"1 1:0.5 3:2\n0 2:1\n1 4:3 5:1\n") as ds:
            with ds.view(1, 2) as v:
                offsets, ids, weights = v.tokens()
                offsets, ids, weights = offsets.tolist(), ids.tolist(), weights.tolist()
                self.assertEqual(offsets, [2, 3, 5])  # a view's offsets need not start at 0
                self.assertEqual([ids[offsets[k]:offsets[k + 1]] for k in range(2)],
                                 [[1], [3, 4]])
                self.assertEqual(weights[offsets[1]:offsets[2]], [3.0, 1.0])

    def test_zero_based_and_num_features(self):
        with aims.Dataset.parse("svmlight", b"1 0:1 3:2\n", zero_based=1,
                                num_features=10) as ds:
            _, ids, _ = ds.tokens()
            self.assertEqual(to_list(ids), [0, 3])
            self.assertEqual(ds.token_dim, 10)

    def test_bad_line(self):
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "svmlight",
                                   b"1 1:0.5\n0 x:y\n")
        self.assertIn("2", err.message)


class TextTest(LeakCheckCase):
    def test_labels_become_class_names(self):
        with aims.Dataset.parse("text", b"pos\tgood movie\nneg\tbad film\npos\tfine\n") as ds:
            self.assertEqual(ds.rows, 3)
            names = ds.class_names
            self.assertEqual(sorted(names), ["neg", "pos"])
            labels = to_list(ds.labels())
            self.assertEqual([names[k] for k in labels], ["pos", "neg", "pos"])
            self.assertEqual(ds.text(1), "bad film")
            self.assertEqual(ds.text(-1), "fine")
            self.assertEqual(ds.text(0, raw=True), b"good movie")
            self.assertEqual(ds.texts(), ["good movie", "bad film", "fine"])
            with self.assertRaises(IndexError):
                ds.text(3)
            self.assertAimsError(aims.AIMS_E_STATE, ds.tokens)

    def test_missing_tab(self):
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "text",
                                   b"pos\tok\nno tab here\n")
        self.assertIn("2", err.message)


class IdxTest(TempDirCase):
    IMAGES = idx_bytes(0x08, [3, 2, 2], bytes(range(12)))
    LABELS = idx_bytes(0x08, [3], bytes([1, 0, 2]))

    def test_load_idx_pair(self):
        images = self.write("img.idx", self.IMAGES)
        labels = self.write("lab.idx", self.LABELS)
        with aims.Dataset.load_idx(images, labels) as ds:
            self.assertEqual((ds.rows, ds.cols), (3, 4))
            self.assertEqual(to_list(ds.features())[2], [8, 9, 10, 11])
            self.assertEqual(to_list(ds.labels()), [1, 0, 2])
            self.assertEqual(ds.num_classes, 3)
        with aims.Dataset.load_idx(images) as ds:
            self.assertIsNone(ds.labels())

    def test_parse_idx_bytes(self):
        with aims.Dataset.parse("idx", self.IMAGES) as ds:
            self.assertEqual((ds.rows, ds.cols), (3, 4))
        with aims.Dataset.parse("idx", self.LABELS) as ds:
            self.assertEqual(ds.rows, 3)

    def test_truncated_idx(self):
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "idx",
                                   self.IMAGES[:-3])
        self.assertIn("truncated", err.message.lower())
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "idx",
                                   self.IMAGES[:6])
        self.assertIn("truncated", err.message.lower())
        path = self.write("short.idx", self.IMAGES[:-1])
        err = self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.load_idx, path)
        self.assertIn("short.idx", err.message)

    def test_count_mismatch(self):
        images = self.write("img.idx", self.IMAGES)
        labels = self.write("lab.idx", idx_bytes(0x08, [2], b"\x00\x01"))
        self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.load_idx, images, labels)


class TopicsTest(TempDirCase):
    def test_load_topics(self):
        d = os.path.join(self.tmp, "fortunes")
        os.mkdir(d)
        entries = lambda word, n: "\n%\n".join("%s number %d" % (word, i) for i in range(n))
        with open(os.path.join(d, "zebra"), "w") as f:
            f.write(entries("stripes", 4) + "\n")
        with open(os.path.join(d, "apple"), "w") as f:
            f.write(entries("fruit", 3) + "\n%\n")
        with open(os.path.join(d, "tiny"), "w") as f:
            f.write("only one\n")
        with open(os.path.join(d, "apple.dat"), "w") as f:
            f.write("ignored\n")
        with aims.Dataset.load_topics(d, min_docs=2) as ds:
            self.assertEqual(ds.class_names, ["apple", "zebra"])
            self.assertEqual(ds.rows, 7)
            labels = to_list(ds.labels())
            self.assertEqual(sorted(labels), [0, 0, 0, 1, 1, 1, 1])
            texts = ds.texts()
            self.assertIn("fruit number 0", [t.strip() for t in texts])
        err = self.assertAimsError(aims.AIMS_E_INVAL, aims.Dataset.load_topics, d,
                                   min_docs=100)
        self.assertIn("100", err.message)
        self.assertAimsError(aims.AIMS_E_NOTFOUND, aims.Dataset.load_topics,
                             os.path.join(self.tmp, "absent"))


class BuildTest(LeakCheckCase):
    def test_from_dense_lists(self):
        with aims.Dataset.from_dense([[1, 2], [3, 4], [5, 6]], labels=[0, 1, 0]) as ds:
            self.assertEqual((ds.rows, ds.cols, ds.num_classes), (3, 2, 2))
            self.assertEqual(to_list(ds.features()), [[1, 2], [3, 4], [5, 6]])
            self.assertEqual(to_list(ds.labels()), [0, 1, 0])

    def test_from_dense_flat_buffer(self):
        flat = array.array("f", [1, 2, 3, 4, 5, 6])
        with aims.Dataset.from_dense(flat, cols=3) as ds:
            self.assertEqual((ds.rows, ds.cols), (2, 3))
        with aims.Dataset.from_dense(flat) as ds:  # 1-D is one row
            self.assertEqual((ds.rows, ds.cols), (1, 6))
        with self.assertRaises(ValueError):
            aims.Dataset.from_dense(flat, cols=4)

    def test_from_dense_errors(self):
        self.assertAimsError(aims.AIMS_E_INVAL, aims.Dataset.from_dense, [[1.0], [2.0]],
                             labels=[0, -1])
        with self.assertRaises(ValueError):
            aims.Dataset.from_dense([[1.0], [2.0]], labels=[0])
        with self.assertRaises(ValueError):
            aims.Dataset.from_dense([[1.0, 2.0], [3.0]])

    def test_from_texts(self):
        with aims.Dataset.from_texts(["héllo wörld", b"raw bytes", "a\x00b"],
                                     labels=[1, 0, 1]) as ds:
            self.assertEqual(ds.rows, 3)
            self.assertEqual(ds.text(0), "héllo wörld")
            self.assertEqual(ds.text(1), "raw bytes")
            self.assertEqual(ds.text(2, raw=True), b"a\x00b")
            self.assertEqual(to_list(ds.labels()), [1, 0, 1])
        with self.assertRaises(TypeError):
            aims.Dataset.from_texts("not a list")

    def test_direct_constructor_refused(self):
        with self.assertRaises(TypeError):
            aims.Dataset()


class DerivedTest(TempDirCase):
    def make(self, n=10):
        return aims.Dataset.from_dense([[i, 10 * i] for i in range(n)],
                                       labels=[i % 2 for i in range(n)])

    def test_view(self):
        with self.make() as ds, ds.view(2, 3) as v:
            self.assertEqual(v.rows, 3)
            self.assertEqual(to_list(v.features()), [[2, 20], [3, 30], [4, 40]])
            self.assertEqual(to_list(v.labels()), [0, 1, 0])
        with self.make() as ds:
            self.assertAimsError(aims.AIMS_E_RANGE, ds.view, 8, 5)
            self.assertAimsError(aims.AIMS_E_RANGE, ds.view, 0, 0)

    def test_view_outlives_closed_parent(self):
        ds = self.make()
        v = ds.view(5, 2)
        ds.close()
        self.assertEqual(to_list(v.features()), [[5, 50], [6, 60]])
        v.close()

    def test_shuffle(self):
        with self.make() as a, self.make() as b:
            a.shuffle(42)
            b.shuffle(42)
            self.assertEqual(to_list(a.features()), to_list(b.features()))
            self.assertEqual(sorted(r[0] for r in to_list(a.features())), list(range(10)))
            v = a.view(0, 2)
            self.assertAimsError(aims.AIMS_E_STATE, a.shuffle, 1)
            self.assertAimsError(aims.AIMS_E_STATE, v.shuffle, 1)
            v.close()
            a.shuffle(1)

    def test_select(self):
        with self.make() as ds:
            with ds.select([3, 1, 3]) as s:
                self.assertEqual(to_list(s.features()), [[3, 30], [1, 10], [3, 30]])
            self.assertAimsError(aims.AIMS_E_RANGE, ds.select, [0, 10])
            with self.assertRaises(ValueError):
                ds.select([-1])

    def test_split(self):
        with self.make(20) as ds:
            train, test = ds.split(0.25, seed=7)
            with train, test:
                self.assertEqual(train.rows + test.rows, 20)
                self.assertEqual(test.rows, 6)  # round(10*0.25)=3 per class (banker's: 2?)
            a, b = ds.split(0.3, seed=1, stratified=False)
            c, d = ds.split(0.3, seed=1, stratified=False)
            self.assertEqual(to_list(b.features()), to_list(d.features()))
            for x in (a, b, c, d):
                x.close()
            self.assertAimsError(aims.AIMS_E_INVAL, ds.split, 1.5)
        with aims.Dataset.from_dense([[1.0], [2.0]]) as nolabels:
            self.assertAimsError(aims.AIMS_E_INVAL, nolabels.split, 0.5, 0, True)

    def test_save_and_load(self):
        path = os.path.join(self.tmp, "ds.aims")
        with aims.Dataset.parse("text", b"pos\tgood\nneg\tbad\n") as ds:
            ds.save(path)
        with aims.Dataset.load("aims", path) as back:
            self.assertEqual(back.texts(), ["good", "bad"])
            self.assertEqual(sorted(back.class_names), ["neg", "pos"])
        with open(path, "rb") as f:
            raw = f.read()
        with aims.Dataset.parse("aims", raw) as back:
            self.assertEqual(back.rows, 2)
        with self.make() as ds:
            ds.save(path)
            with aims.Dataset.load("aims", path) as back:
                self.assertEqual(to_list(back.features()), to_list(ds.features()))
                self.assertEqual(to_list(back.labels()), to_list(ds.labels()))
        bad = bytearray(raw)
        bad[len(bad) // 2] ^= 0xFF
        self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "aims", bytes(bad))
        self.assertAimsError(aims.AIMS_E_CORRUPT, aims.Dataset.parse, "aims", raw[:-5])


class LifetimeTest(LeakCheckCase):
    def test_context_manager_and_close(self):
        with aims.Dataset.parse("csv", CSV) as ds:
            self.assertFalse(ds.closed)
        self.assertTrue(ds.closed)
        ds.close()
        ds.close()
        err = self.assertAimsError(aims.AIMS_E_CLOSED, lambda: ds.rows)
        self.assertIn("closed", err.message)
        self.assertEqual(repr(ds), "<aims.Dataset closed>")

    def test_close_frees_immediately(self):
        before = aims.alloc_live()
        ds = aims.Dataset.parse("csv", CSV)
        self.assertGreater(aims.alloc_live(), before)
        ds.close()
        self.assertEqual(aims.alloc_live(), before)

    def test_del_frees(self):
        before = aims.alloc_live()
        ds = aims.Dataset.parse("csv", CSV)
        del ds
        gc.collect()
        self.assertEqual(aims.alloc_live(), before)

    def test_borrowed_arrays_outlive_close(self):
        before = aims.alloc_live()
        ds = aims.Dataset.parse("csv", CSV, label_column=-2)
        feats, labels = ds.features(), ds.labels()
        v = ds.view(1, 1)
        vf = v.features()
        ds.close()
        v.close()
        self.assertGreater(aims.alloc_live(), before)  # still borrowed
        self.assertEqual(to_list(feats)[3], [7, 8])
        self.assertEqual(to_list(labels), [0, 1, 0, 1])
        self.assertEqual(to_list(vf), [[3, 4]])
        del feats, labels, vf
        gc.collect()
        self.assertEqual(aims.alloc_live(), before)


class ZeroCopyTest(LeakCheckCase):
    """The accessors share the C memory: same address, no copy."""

    def c_pointer(self, ds, fn):
        return getattr(_lib.lib, fn)(ds._ptr)

    def address(self, arr):
        if numpy is not None and isinstance(arr, numpy.ndarray):
            return arr.ctypes.data
        return ctypes.addressof(arr.obj)  # memoryview over a ctypes array

    def test_features_labels_tokens_share_memory(self):
        with aims.Dataset.parse("csv", CSV, label_column=-2) as ds:
            f = ds.features()
            self.assertEqual(self.address(f), self.c_pointer(ds, "aims_dataset_features"))
            self.assertEqual(self.address(ds.labels()),
                             self.c_pointer(ds, "aims_dataset_labels"))
            with ds.view(2, 2) as v:
                self.assertEqual(self.address(v.features()), self.address(f) + 2 * 2 * 4)
            if numpy is not None:
                self.assertEqual(f.dtype, numpy.float32)
                self.assertEqual(f.shape, (4, 2))
                self.assertFalse(f.flags.writeable)
                with self.assertRaises(ValueError):
                    f[0, 0] = 1
            else:
                self.assertEqual(f.format, "f")
                self.assertEqual(f.shape, (4, 2))
                self.assertTrue(f.readonly)
            del f
        with aims.Dataset.parse("svmlight", b"1 1:0.5 3:2\n0 2:1\n") as ds:
            offsets, ids, weights = ds.tokens()
            o, i, w = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
            _lib.lib.aims_dataset_tokens(ds._ptr, ctypes.byref(o), ctypes.byref(i),
                                         ctypes.byref(w))
            self.assertEqual(self.address(offsets), o.value)
            self.assertEqual(self.address(ids), i.value)
            self.assertEqual(self.address(weights), w.value)
            del offsets, ids, weights

    @unittest.skipIf(numpy is None, "numpy not installed")
    def test_numpy_float32_input_not_copied(self):
        x = numpy.arange(12, dtype=numpy.float32).reshape(4, 3)
        # from_dense copies into the dataset (by contract), but the input array is
        # passed by pointer: the converted input is the array itself.
        inp = aims._float_matrix(x, None, "x")
        self.assertIs(inp.keep, x)
        with aims.Dataset.from_dense(x, labels=numpy.array([0, 1, 2, 3])) as ds:
            self.assertEqual(ds.features().tolist(), x.tolist())
            self.assertEqual(ds.labels().dtype, numpy.int32)
        with aims.Dataset.from_dense(numpy.arange(6, dtype=numpy.float64).reshape(3, 2).T) as ds:
            self.assertEqual(ds.features().tolist(), [[0, 2, 4], [1, 3, 5]])
        with self.assertRaises(ValueError):
            aims.Dataset.from_dense(numpy.zeros((2, 2)), labels=numpy.array([1, 1 << 40]))

    def test_select_with_numpy_index(self):
        if numpy is None:
            self.skipTest("numpy not installed")
        with aims.Dataset.parse("csv", CSV) as ds, ds.select(numpy.array([3, 0])) as s:
            self.assertEqual(s.features().tolist(), [[7, 8, 1], [1, 2, 0]])


@unittest.skipIf(numpy is None, "numpy not installed: the fallback path is the default")
class WithoutNumpyTest(LeakCheckCase):
    """With numpy present, force the memoryview / array.array paths as well."""

    def setUp(self):
        super().setUp()
        # Every module of the package that reads numpy holds its own _np name.
        for name, module in sorted(sys.modules.items()):
            if (name == "aims" or name.startswith("aims.")) and hasattr(module, "_np"):
                patcher = mock.patch.object(module, "_np", None)
                patcher.start()
                self.addCleanup(patcher.stop)

    def test_memoryview_exports(self):
        with aims.Dataset.parse("csv", CSV, label_column=-2) as ds:
            f = ds.features()
            self.assertIsInstance(f, memoryview)
            self.assertEqual(f.tolist(), [[1, 2], [3, 4], [5, 6], [7, 8]])
            self.assertEqual(f[3, 1], 8)
            self.assertEqual(ds.labels().tolist(), [0, 1, 0, 1])
            self.assertEqual(ctypes.addressof(f.obj), _lib.lib.aims_dataset_features(ds._ptr))
            del f

    def test_inputs_without_numpy(self):
        flat = array.array("f", [1, 2, 3, 4])
        with aims.Dataset.from_dense(flat, labels=array.array("i", [0, 1]), cols=2) as ds:
            self.assertEqual(ds.features().tolist(), [[1, 2], [3, 4]])
            self.assertEqual(ds.labels().tolist(), [0, 1])
        with aims.Dataset.from_dense([[1, 2], [3, 4]], labels=(1, 0)) as ds:
            self.assertEqual(ds.labels().tolist(), [1, 0])
        with aims.Dataset.from_dense(memoryview(bytes(array.array("f", [5, 6]))).cast("f")) \
                as ds:
            self.assertEqual(ds.features().tolist(), [[5, 6]])
        with aims.Dataset.from_dense(array.array("d", [1, 2, 3]), cols=1) as ds:
            self.assertEqual(ds.features().tolist(), [[1], [2], [3]])
        with aims.Dataset.parse("csv", CSV) as ds, ds.select([1]) as s:
            self.assertEqual(s.features().tolist(), [[3, 4, 1]])

    def test_tokens_without_numpy(self):
        with aims.Dataset.parse("svmlight", b"1 1:0.5 3:2\n0 2:1\n") as ds:
            offsets, ids, weights = ds.tokens()
            self.assertEqual(offsets.tolist(), [0, 2, 3])
            self.assertEqual(ids.tolist(), [0, 2, 1])
            self.assertEqual(weights.tolist(), [0.5, 2.0, 1.0])
            del offsets, ids, weights


if __name__ == "__main__":
    unittest.main()
