"""Tests of the service API through the binding: messages, nodes with Python
handlers, clients (by name through a registry, by address, async), the built-in
infer and train services, on inproc://, ipc:// and tcp://.

Parts of the C library that are not exported (still landing) skip their tests:
each test class names the symbols it needs. Runs with and without numpy.
"""

import array
import gc
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
import unittest

import aims
from aims import _lib
from aims_testutil import LeakCheckCase, numpy, run_threads

_names = itertools.count(1)


def unique(prefix):
    """inproc:// names are process-wide: every test uses fresh ones."""
    return "%s%d_%d" % (prefix, os.getpid(), next(_names))


def needs(*symbols):
    missing = [s for s in symbols if not _lib.has(s)]
    return unittest.skipIf(missing, "libaims does not export %s yet" % ", ".join(missing))


def values(v):
    """Comparable plain-Python form of a message value (numpy, Tensor, bytes)."""
    if isinstance(v, bytes):
        return v
    if isinstance(v, aims.Tensor):
        data = v.data if isinstance(v.data, bytes) else v.data.tolist()
        return (v.dtype, tuple(v.shape), data)
    if numpy is not None and isinstance(v, numpy.ndarray):
        return (str(v.dtype), v.shape, v.tolist())
    return v


def sample_tensors():
    """One tensor of every dtype (and shapes 0-d..4-d, zero-size) in the form the
    package returns: numpy arrays with numpy, Tensor tuples without."""
    if numpy is not None:
        return {
            "f": numpy.arange(6, dtype=numpy.float32).reshape(2, 3) / 4,
            "i": numpy.array([-2, -1, 0, 2147483647], dtype=numpy.int32),
            "u": numpy.arange(16, dtype=numpy.uint8).reshape(2, 2, 2, 2),
            "q": numpy.array(-(1 << 40), dtype=numpy.int64),
            "text": "h\u00e9llo\nworld".encode("utf-8"),
            "empty": numpy.zeros((0, 5), dtype=numpy.float32),
        }
    return {
        "f": aims.Tensor("f32", (2, 3), array.array("f", [0, .25, .5, .75, 1, 1.25])),
        "i": aims.Tensor("i32", (4,), array.array("i", [-2, -1, 0, 2147483647])),
        "u": aims.Tensor("u8", (2, 2, 2, 2), bytes(range(16))),
        "q": aims.Tensor("i64", (), array.array("q", [-(1 << 40)])),
        "text": "h\u00e9llo\nworld".encode("utf-8"),
        "empty": aims.Tensor("f32", (0, 5), b""),
    }


def expected(tensors):
    out = {}
    for name, v in tensors.items():
        if isinstance(v, aims.Tensor) and v.dtype != "bytes":
            data = v.data
            if isinstance(data, (bytes, bytearray)):
                code = {"u8": "B", "f32": "f", "i32": "i", "i64": "q"}[v.dtype]
                data = memoryview(bytes(data)).cast(code)
            flat = list(data) if not isinstance(data, memoryview) else data.tolist()
            shape = tuple(v.shape)
            # Nest the flat list to the shape, as memoryview.tolist() does.
            for d in reversed(shape[1:]):
                flat = [flat[i:i + d] for i in range(0, len(flat), d)] if d else []
            if shape == ():
                flat = flat[0]
            elif 0 in shape:
                flat = []
            out[name] = (v.dtype, shape, flat)
        else:
            out[name] = values(v)
    return out


@needs("aims_msg_create")
class TestMsg(LeakCheckCase):
    def test_round_trip_every_dtype(self):
        src = sample_tensors()
        with aims.Msg(src) as m:
            self.assertEqual(len(m), len(src))
            self.assertEqual(m.names(), list(src))
            got = m.to_dict()
        want = expected(src)
        for name in src:
            if isinstance(got[name], aims.Tensor) and 0 in got[name].shape:
                self.assertEqual(got[name].shape, want[name][1])
                continue
            self.assertEqual(values(got[name]), want[name], name)

    def test_scalars_strings_lists(self):
        with aims.Msg({"n": 7, "x": 1.5, "s": "abc", "rows": [[1, 2], [3, 4]]}) as m:
            d = m.to_dict()
            self.assertEqual(d["s"], b"abc")
            if numpy is not None:
                self.assertEqual(d["n"].dtype, numpy.int64)
                self.assertEqual(int(d["n"]), 7)
                self.assertEqual(float(d["x"]), 1.5)
                self.assertEqual(d["rows"].dtype, numpy.float32)
                self.assertEqual(d["rows"].tolist(), [[1, 2], [3, 4]])
            else:
                self.assertEqual(d["n"].dtype, "i64")
                self.assertEqual(d["n"].data.tolist(), 7)
                self.assertEqual(d["x"].data.tolist(), 1.5)
                self.assertEqual(d["rows"].shape, (2, 2))
                self.assertEqual(d["rows"].data.tolist(), [[1.0, 2.0], [3.0, 4.0]])
            self.assertIn("n", m)
            self.assertNotIn("zz", m)
            with self.assertRaises(KeyError):
                m["zz"]

    def test_borrowed_storage_is_pinned_until_clear(self):
        buf = bytearray(b"abcd")
        m = aims.Msg()
        m.add("b", ("u8", (4,), buf))
        with self.assertRaises(BufferError):
            buf.extend(b"more")      # the borrow pins the buffer: no realloc under C
        buf[0] = ord("z")            # borrowed, not copied: the message sees the change
        self.assertEqual(bytes(values(m["b"])[2]) if numpy is None else
                         bytes(m["b"].tolist()), b"zbcd")
        m.clear()
        self.assertEqual(len(m), 0)
        buf.extend(b"more")          # released by clear()
        m.add("b", ("u8", (8,), buf), borrow=False)  # a copy: no pin
        buf.extend(b"!")
        m.close()

    def test_borrowed_object_outlives_caller_reference(self):
        if numpy is not None:
            arr = numpy.arange(1000, dtype=numpy.float32)
        else:
            arr = array.array("f", range(1000))
        m = aims.Msg({"x": arr})
        del arr
        gc.collect()
        x = m["x"]
        self.assertEqual((x if numpy is not None else x.data).tolist()[999], 999.0)
        m.close()

    def test_alloc_fills_in_place(self):
        with aims.Msg() as m:
            view = m.alloc("y", "i32", (2, 2))
            view[1, 1] = 5
            got = m["y"]
            flat = got.tolist() if numpy is not None else got.data.tolist()
            self.assertEqual(flat, [[0, 0], [0, 5]])

    def test_errors(self):
        with aims.Msg({"a": 1}) as m:
            self.assertAimsError(aims.AIMS_E_INVAL, m.add, "a", 2)       # duplicate name
            self.assertAimsError(aims.AIMS_E_INVAL, m.add, "", 2)        # empty name
            with self.assertRaises(ValueError):
                m.add("big", ("u8", (1, 1, 1, 1, 1), b"x"))              # 5 dims
            with self.assertRaises(ValueError):
                m.add("short", ("f32", (3,), b"\0" * 8))                 # size mismatch
            with self.assertRaises(ValueError):
                m.add("dt", ("f16", (1,), b"\0\0"))
            with self.assertRaises(TypeError):
                m.add("obj", object())
            self.assertEqual(m.error, "")
            m.set_error("went wrong")
            self.assertEqual(m.error, "went wrong")
            m.clear()
            self.assertEqual((len(m), m.error), (0, ""))


@needs("aims_msg_create")
class TestHandlerTrampoline(LeakCheckCase):
    """The C thunks driven directly (as a node worker would call them): statuses,
    error texts, and that no exception escapes into C."""

    def run_handler(self, fn, method, request):
        token = aims._token()
        aims._handlers[token] = fn
        req, reply = aims.Msg(request), aims.Msg()
        try:
            rc = aims._HANDLER_THUNK(token, method.encode(), req._ptr, reply._ptr, 0)
            return rc, reply.to_dict(), reply.error
        finally:
            aims._handlers.pop(token, None)
            req.close()
            reply.close()

    def test_statuses(self):
        rc, out, err = self.run_handler(echo, "ping", {"a": 1, "s": "x"})
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(values(out["s"]), b"x")
        rc, out, err = self.run_handler(echo, "fail_value", {"a": 1})
        self.assertEqual((rc, out, err), (aims.AIMS_E_INVAL, {}, "ValueError: bad input 1"))
        rc, _, err = self.run_handler(echo, "fail_aims", {})
        self.assertEqual((rc, err), (aims.AIMS_E_NOTFOUND, "no such key"))
        rc, _, err = self.run_handler(echo, "fail_return", {})
        self.assertEqual(rc, aims.AIMS_E_INVAL)
        self.assertIn("TypeError", err)

        rc, out, err = self.run_handler(lambda m, r: aims.Msg({"m": "msg"}), "m", {})
        self.assertEqual((rc, values(out["m"])), (0, b"msg"))

        def partial(method, req):
            raise KeyError("k")
        self.assertEqual(self.run_handler(partial, "m", {})[:2], (aims.AIMS_E_NOTFOUND, {}))

        def interrupt(method, req):
            raise KeyboardInterrupt()
        rc, _, err = self.run_handler(interrupt, "m", {})
        self.assertEqual((rc, err), (16, "KeyboardInterrupt"))   # AIMS_E_INTERNAL

        def ok_code(method, req):
            raise aims.AimsError(0, "zero is no failure")
        self.assertEqual(self.run_handler(ok_code, "m", {})[0], 16)

        def huge(method, req):
            raise RuntimeError("x" * 5000)
        rc, _, err = self.run_handler(huge, "m", {})
        self.assertEqual(rc, 16)
        self.assertLessEqual(len(err), 1024)

        def half_reply(method, req):
            return {"ok": 1, "bad": object()}   # fails after "ok" was added
        rc, out, err = self.run_handler(half_reply, "m", {})
        self.assertEqual((rc, out), (aims.AIMS_E_INVAL, {}))

    def test_deadline_visible_inside_handler(self):
        seen = []
        token = aims._token()
        aims._handlers[token] = lambda m, r: seen.append(aims.request_deadline_ns())
        req, reply = aims.Msg(), aims.Msg()
        try:
            aims._HANDLER_THUNK(token, b"m", req._ptr, reply._ptr, 12345)
        finally:
            aims._handlers.pop(token, None)
            req.close()
            reply.close()
        self.assertEqual(seen, [12345])
        self.assertEqual(aims.request_deadline_ns(), 0)


SVC_SYMBOLS = ("aims_node_create", "aims_node_listen", "aims_service_add_handler",
               "aims_service_start", "aims_client_create", "aims_client_call")


def echo(method, req):
    """A Python handler: echoes the request; "fail*" methods raise."""
    if method == "fail_value":
        raise ValueError("bad input %d" % len(req))
    if method == "fail_aims":
        raise aims.AimsError(aims.AIMS_E_NOTFOUND, "no such key")
    if method == "fail_return":
        return 42  # not a dict: TypeError inside the trampoline
    if method == "method":
        return {"method": method}
    return req


class ServiceCase(LeakCheckCase):
    """Builds a node with an echo service + registry + client; closes them."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="aims-py-")
        self.registry = aims.Registry()

    def tearDown(self):
        for obj in getattr(self, "_objs", [])[::-1]:
            obj.close()
        self._objs = []
        self.registry.close()
        self.registry = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        super().tearDown()

    def own(self, obj):
        self.__dict__.setdefault("_objs", []).append(obj)
        return obj

    def node(self, name, **params):
        # A short drain grace: closing a node need not wait two heartbeats here.
        params.setdefault("drain_grace_ms", 1)
        return self.own(aims.Node(name, **params))

    def echo_node(self, url=None, **svc_params):
        name = unique("py")
        node = self.own(self.node(name, workers=2))
        node.listen(url or "inproc://" + name)
        node.set_registry(self.registry)
        svc = node.add_handler("echo", echo, **svc_params).start()
        return node, svc

    def client(self, **params):
        return self.own(aims.Client(registry=self.registry, **params))


@needs(*SVC_SYMBOLS)
class TestPythonHandler(ServiceCase):
    def test_echo_by_name_inproc(self):
        node, svc = self.echo_node()
        c = self.client()
        src = sample_tensors()
        got = c.call("echo", "ping", src)
        want = expected(src)
        self.assertEqual(list(got), list(src))
        for name in src:
            if isinstance(got[name], aims.Tensor) and 0 in got[name].shape:
                continue
            self.assertEqual(values(got[name]), want[name], name)
        self.assertEqual(c.call("echo", "method"), {"method": b"method"})
        with aims.Msg({"s": "from a Msg"}) as m:   # a Msg works as the request too
            self.assertEqual(values(c.call("echo", "ping", m)["s"]), b"from a Msg")
            self.assertEqual(len(m), 1)
        self.assertGreaterEqual(svc.stat("requests"), 2)
        self.assertEqual(svc.stats["errors"], 0)

    def test_balance_degree(self):
        self.echo_node()
        self.echo_node()
        c = self.client()
        for _ in range(20):
            c.call("echo", "ping", {"x": [1.0]})
        degree, umax = c.balance_degree("echo", window_ms=20)
        self.assertGreaterEqual(degree, 0.0)
        self.assertLessEqual(degree, 1.0)
        self.assertGreaterEqual(umax, 0.0)
        with self.assertRaises(aims.AimsError) as cm:
            c.balance_degree("nobody", window_ms=5)
        self.assertEqual(cm.exception.name, "AIMS_E_NOTFOUND")

    def test_reply_arrays_are_read_only_views(self):
        self.echo_node()
        c = self.client()
        x = c.call("echo", "ping", {"x": [[1.0, 2.0]]})["x"]
        if numpy is not None:
            self.assertFalse(x.flags.writeable)
            self.assertEqual(x.tolist(), [[1.0, 2.0]])
        else:
            self.assertTrue(x.data.readonly)
        del x
        gc.collect()  # the reply message goes with its last view (leak check)

    def test_handler_exceptions_become_statuses(self):
        node, svc = self.echo_node()
        c = self.client(max_attempts=1)
        err = self.assertAimsError(aims.AIMS_E_INVAL, c.call, "echo", "fail_value",
                                   {"a": 1, "b": 2})
        self.assertIn("ValueError: bad input 2", err.message)
        err = self.assertAimsError(aims.AIMS_E_NOTFOUND, c.call, "echo", "fail_aims")
        self.assertIn("no such key", err.message)
        err = self.assertAimsError(aims.AIMS_E_INVAL, c.call, "echo", "fail_return")
        self.assertIn("TypeError", err.message)
        self.assertGreaterEqual(svc.stat("errors"), 3)
        # The node still serves after the failures.
        self.assertEqual(values(c.call("echo", "ping", {"s": b"ok"})["s"]), b"ok")

    def test_unknown_service(self):
        self.echo_node()
        c = self.client(max_attempts=1, timeout_ms=2000, retry_budget=0.5,
                        lb_policy="round_robin")
        self.assertAimsError(aims.AIMS_E_NOTFOUND, c.call, "nope", "ping")

    def test_many_python_threads(self):
        self.echo_node(concurrency=2)
        c = self.client()
        errors = []

        def worker(k):
            try:
                for i in range(20):
                    got = c.call("echo", "ping", {"k": k * 1000 + i}, idempotent=True)
                    v = got["k"]
                    v = int(v) if numpy is not None else v.data.tolist()
                    if v != k * 1000 + i:
                        errors.append((k, i, v))
            except Exception as exc:  # reported below
                errors.append(exc)
        run_threads(worker)
        self.assertEqual(errors, [])

    def test_handler_calls_another_service(self):
        """A handler may call out through a client: the GIL is released while the
        nested call waits, so the inner handler (on any thread) can run."""
        node, _ = self.echo_node()
        c = self.client()

        def proxy(method, req):
            inner = c.call("echo", method, req)
            return {"via": "proxy", "inner": inner["s"]}
        node.add_handler("proxy", proxy).start()
        got = c.call("proxy", "ping", {"s": "deep"})
        self.assertEqual((values(got["via"]), values(got["inner"])), (b"proxy", b"deep"))

    def test_stop_and_closed_node(self):
        node, svc = self.echo_node()
        c = self.client(max_attempts=1, timeout_ms=2000)
        svc.stop(1000)
        with self.assertRaises(aims.AimsError):
            c.call("echo", "ping")
        svc.start()
        self.assertEqual(values(c.call("echo", "ping", {"s": b"x"})["s"]), b"x")
        node.close()
        self.assertAimsError(aims.AIMS_E_CLOSED, svc.stat, "requests")
        self.assertAimsError(aims.AIMS_E_CLOSED, node.listen, "inproc://zz")
        with self.assertRaises(aims.AimsError):
            c.call("echo", "ping")

    def test_registry_sees_started_services(self):
        node, svc = self.echo_node()
        self.assertEqual(len(self.registry.lookup("echo")), 1)
        addr = self.registry.address(self.registry.lookup("echo")[0])
        self.assertEqual(addr, node.address(0))
        svc.stop(1000)
        self.assertEqual(self.registry.lookup("echo"), [])

    def test_exit_without_close(self):
        """Nodes and clients left open are closed at exit, before the interpreter
        goes away under their threads."""
        import subprocess
        import sys
        script = (
            "import aims\n"
            "r = aims.Registry()\n"
            "n = aims.Node('exit%d', registry=r); n.listen('inproc://exit%d')\n"
            "n.add_handler('echo', lambda m, q: q).start()\n"
            "c = aims.Client(registry=r)\n"
            "assert c.call('echo', 'ping', {'s': 'bye'})['s'] == b'bye'\n"
            "f = [c.call_async('echo', 'ping', {'i': i}) for i in range(20)]\n"
            "print('done')\n" % (os.getpid(), os.getpid()))
        out = subprocess.run([sys.executable, "-c", script], capture_output=True,
                             timeout=60, env=dict(os.environ))
        self.assertEqual(out.returncode, 0, out.stderr.decode(errors="replace"))
        self.assertEqual(out.stdout.strip(), b"done")

    def test_metrics(self):
        node, _ = self.echo_node()
        c = self.client()
        c.call("echo", "ping", {"a": 1})
        text = node.metrics.prometheus()
        self.assertIsInstance(text, str)
        self.assertIsInstance(c.metrics.prometheus(), str)
        m = node.metrics
        node.close()
        self.assertAimsError(aims.AIMS_E_CLOSED, m.prometheus)

    def test_bad_names_and_params(self):
        node, _ = self.echo_node()
        self.assertAimsError(aims.AIMS_E_EXISTS, node.add_handler, "echo", echo)
        with self.assertRaises(TypeError):
            node.add_handler("x", "not callable")
        with self.assertRaises(aims.AimsError):
            node.set_param("no_such_param", 1)
        with self.assertRaises(aims.AimsError):
            aims.Node("bad name!")


@needs(*SVC_SYMBOLS, "aims_client_call_addr")
class TestTransports(ServiceCase):
    def _round_trip(self, url):
        node, _ = self.echo_node(url)
        addr = node.address(0)
        self.assertTrue(addr.startswith(url.split("://")[0] + "://"), addr)
        c = self.client()
        payload = {"x": ("f32", (2, 2), array.array("f", [1, 2, 3, 4])), "s": "txt"}
        got = c.call_addr(addr, "echo", "ping", payload)
        self.assertEqual(values(got["s"]), b"txt")
        x = got["x"]
        self.assertEqual((x if numpy is not None else x.data).tolist(), [[1, 2], [3, 4]])
        got = c.call("echo", "ping", {"n": 3})           # by name through the registry
        self.assertEqual(int(got["n"]) if numpy is not None else got["n"].data.tolist(), 3)
        err = self.assertAimsError(aims.AIMS_E_INVAL, c.call_addr, addr, "echo",
                                   "fail_value", {"a": 1})
        self.assertIn("ValueError: bad input 1", err.message)
        if numpy is not None:  # a larger payload (compressed above the threshold)
            big = numpy.zeros((256, 256), dtype=numpy.float32)
            big[::7, ::3] = 1.5
            self.assertTrue((c.call_addr(addr, "echo", "ping", {"big": big})["big"]
                             == big).all())

    def test_tcp(self):
        self._round_trip("tcp://127.0.0.1:0")

    def test_ipc(self):
        self._round_trip("ipc://" + os.path.join(self.tmp, "echo.sock"))

    def test_inproc(self):
        self._round_trip("inproc://" + unique("t"))


@needs(*SVC_SYMBOLS, "aims_client_call_async")
class TestAsync(ServiceCase):
    def test_callback_and_future(self):
        self.echo_node()
        c = self.client(max_attempts=1)
        done = threading.Event()
        seen = []

        def callback(reply, error):
            seen.append((reply, error))
            done.set()
        fut = c.call_async("echo", "ping", {"s": "async"}, callback=callback)
        self.assertEqual(values(fut.result(timeout=10)["s"]), b"async")
        self.assertTrue(done.wait(10))
        self.assertIsNone(seen[0][1])
        self.assertEqual(values(seen[0][0]["s"]), b"async")

        fut = c.call_async("echo", "fail_value", {"a": 1})
        exc = fut.exception(timeout=10)
        self.assertIsInstance(exc, aims.AimsError)
        self.assertEqual(exc.code, aims.AIMS_E_INVAL)
        self.assertIn("ValueError", exc.message)

    def test_failure_to_start_and_timeout(self):
        node, _ = self.echo_node()
        c = self.client(max_attempts=1)
        calls = []
        fut = c.call_async("nope", "ping", {}, callback=lambda r, e: calls.append(e))
        self.assertEqual(fut.exception(timeout=10).code, aims.AIMS_E_NOTFOUND)
        deadline = time.monotonic() + 10
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual([e.code for e in calls], [aims.AIMS_E_NOTFOUND])

        release = threading.Event()

        def slow(method, req):
            release.wait(10)
            return {}
        node.add_handler("slow", slow, inline=0).start()
        try:
            self.assertEqual(c.call_async("slow", "m", {}, timeout_ms=50)
                             .exception(timeout=10).code, aims.AIMS_E_TIMEOUT)
            self.assertAimsError(aims.AIMS_E_TIMEOUT, c.call, "slow", "m", {}, timeout_ms=50)
        finally:
            release.set()

    def test_many_in_flight_and_callback_exception(self):
        self.echo_node()
        c = self.client()
        futs = [c.call_async("echo", "ping", {"i": i}) for i in range(50)]
        got = [f.result(timeout=20)["i"] for f in futs]
        got = [int(v) if numpy is not None else v.data.tolist() for v in got]
        self.assertEqual(got, list(range(50)))

        def bad_callback(reply, error):
            raise RuntimeError("printed, never reaches C")
        import contextlib
        import io
        with contextlib.redirect_stderr(io.StringIO()):
            f = c.call_async("echo", "ping", {"i": 1}, callback=bad_callback)
            f.result(timeout=10)

    def test_close_inside_callback_is_refused(self):
        self.echo_node()
        c = self.client()
        out = []

        def callback(reply, error):
            try:
                c.close()
            except aims.AimsError as exc:
                out.append(exc.code)
        c.call_async("echo", "ping", {}, callback=callback).result(timeout=10)
        deadline = time.monotonic() + 10
        while not out and time.monotonic() < deadline:
            time.sleep(0.01)
        self.assertEqual(out, [aims.AIMS_E_MISUSE])


def toy_data(n=200, seed=3):
    """Two well-separated classes in 4 dimensions (plain lists, no numpy needed)."""
    import random
    rnd = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        k = i % 2
        rows.append([rnd.gauss(3.0 if k else -3.0, 1.0) for _ in range(4)])
        labels.append(k)
    return rows, labels


@needs(*SVC_SYMBOLS, "aims_service_add_infer")
class TestInferService(ServiceCase):
    def test_predict_matches_bundle(self):
        rows, labels = toy_data()
        with aims.Dataset.from_dense(rows, labels) as ds:
            model = aims.Model("softmax", 4, 2)
            model.fit(ds, epochs=5, lr=0.1, seed=1)
        bundle = aims.Bundle(None, model, name="toy", version="1")
        model.close()
        node = self.node(unique("inf"))
        node.listen("inproc://" + node.name)
        node.set_registry(self.registry)
        svc = node.add_infer("toy", bundle, batch_max=8).start()
        direct = bundle.predict_rows(rows[:20])
        bundle.close()  # the node keeps it alive while the service uses it
        c = self.client()
        x = numpy.asarray(rows[:20], dtype=numpy.float32) if numpy is not None else \
            ("f32", (20, 4), array.array("f", [v for r in rows[:20] for v in r]))
        y = c.call("toy", "predict", {"x": x}, idempotent=True)["y"]
        ids = (y.tolist() if numpy is not None else y.data.tolist())
        if numpy is not None:
            want = direct.argmax(axis=1).tolist()
        else:
            want = [0 if direct[2 * i] >= direct[2 * i + 1] else 1 for i in range(20)]
        self.assertEqual([int(v) for v in ids], want)
        self.assertGreater(sum(int(v) == k for v, k in zip(ids, labels[:20])), 17)
        proba = c.call("toy", "predict", {"x": x, "output": ("i32", (), [2])})["y"]
        self.assertEqual(tuple(proba.shape), (20, 2))
        info = c.call("toy", "info")
        self.assertEqual(values(info["name"]), b"toy")
        self.assertEqual(values(info["version"]), b"1")
        self.assertGreaterEqual(svc.stat("batches"), 1)
        err = self.assertAimsError(aims.AIMS_E_INVAL, c.call, "toy", "predict",
                                   {"x": ("f32", (1, 3), array.array("f", [1, 2, 3]))})
        self.assertTrue(err.message)

    @needs("aims_service_swap_bundle")
    def test_swap_bundle(self):
        rows, labels = toy_data()
        bundles = []
        with aims.Dataset.from_dense(rows, labels) as ds:
            for version in ("1", "2"):
                m = aims.Model("softmax", 4, 2)
                m.fit(ds, epochs=2, lr=0.1, seed=int(version))
                bundles.append(aims.Bundle(None, m, name="toy", version=version))
                m.close()
        node = self.node(unique("swap"))
        node.listen("inproc://" + node.name)
        node.set_registry(self.registry)
        svc = node.add_infer("toy", bundles[0]).start()
        c = self.client()
        self.assertEqual(values(c.call("toy", "info")["version"]), b"1")
        svc.swap_bundle(bundles[1])
        self.assertEqual(values(c.call("toy", "info")["version"]), b"2")
        for b in bundles:
            b.close()


@needs(*SVC_SYMBOLS, "aims_service_add_preprocess")
class TestPreprocessService(ServiceCase):
    def test_transform_matches_pipeline(self):
        rows, labels = toy_data(50)
        pipe = aims.Pipeline(["standardize"])
        with aims.Dataset.from_dense(rows, labels) as ds:
            pipe.fit(ds)
        direct = pipe.transform_rows(rows[:5])
        node = self.node(unique("pre"))
        node.listen("inproc://" + node.name)
        node.set_registry(self.registry)
        node.add_preprocess("prep", pipe).start()
        pipe.close()  # kept alive by the node
        c = self.client()
        flat = array.array("f", [v for r in rows[:5] for v in r])
        out = c.call("prep", "transform", {"x": ("f32", (5, 4), flat)}, idempotent=True)["x"]
        got = out.tolist() if numpy is not None else out.data.tolist()
        want = direct.tolist() if numpy is not None else \
            [list(direct[i * 4:(i + 1) * 4]) for i in range(5)]
        for g, w in zip(got, want):
            for a, b in zip(g, w):
                self.assertAlmostEqual(a, b, places=5)


@needs(*SVC_SYMBOLS, "aims_service_add_train")
class TestTrainService(ServiceCase):
    def test_submit_status_result(self):
        rows, labels = toy_data(100)
        node = self.node(unique("trn"))
        node.listen("inproc://" + node.name)
        node.set_registry(self.registry)
        node.add_train("trainer").start()
        c = self.client()
        x = ("f32", (len(rows), 4), array.array("f", [v for r in rows for v in r]))
        y = ("i32", (len(labels),), array.array("i", labels))
        job = {"job": "job-1", "x": x, "y": y,
               "spec": "kind=softmax\nclasses=2\nepochs=3\nlr=0.1\n"}
        first = c.call("trainer", "submit", job)
        again = c.call("trainer", "submit", job)   # same job id: no second job
        state = lambda r: int(r["state"]) if numpy is not None else r["state"].data.tolist()
        self.assertIn(state(first), (0, 1, 2))
        self.assertIn(state(again), (0, 1, 2))
        handle = bytes(values(first["handle"]))   # the job's secret
        self.assertEqual(len(handle), 32)
        self.assertNotIn("handle", again)         # a resubmit never leaks it
        with self.assertRaises(aims.AimsError) as cm:  # no handle
            c.call("trainer", "status", {"job": "job-1"})
        self.assertEqual(cm.exception.code, aims.AIMS_E_DENIED)
        deadline = time.monotonic() + 60
        while True:
            st = c.call("trainer", "status", {"job": "job-1", "handle": handle})
            if state(st) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual(aims.TRAIN_STATES[state(st)], "done")
        blob = c.call("trainer", "result", {"job": "job-1", "handle": handle})["bundle"]
        with aims.Bundle.parse(values(blob)) as b:
            self.assertTrue(b.model.is_trained)


@needs(*SVC_SYMBOLS, "aims_service_add_infer", "aims_service_add_optimize")
class TestOptimizeService(ServiceCase):
    def test_optimize_and_refuse(self):
        rows, labels = toy_data(200)
        with aims.Dataset.from_dense(rows, labels) as ds:
            model = aims.Model("softmax", 4, 2)
            model.fit(ds, epochs=3, lr=0.1, seed=1)
        path = os.path.join(self.tmp, "m.bundle")
        with aims.Bundle(None, model, name="toy", version="1") as b:
            b.save(path)
        model.close()
        with open(path, "rb") as f:
            blob = f.read()
        node = self.node(unique("opt"))
        node.listen("inproc://" + node.name)
        node.set_registry(self.registry)
        node.add_optimize("optimize.toy").start()
        c = self.client()
        req = {"bundle": ("bytes", (len(blob),), blob),
               "x": ("f32", (len(rows), 4), array.array("f", [v for r in rows for v in r])),
               "y": ("i32", (len(labels),), array.array("i", labels)),
               "max_drop": 0.5}
        rep = c.call("optimize.toy", "optimize", req)
        with aims.Bundle.parse(values(rep["bundle"])) as q:
            self.assertTrue(q.model.is_quantized)
        req["max_drop"] = -1.0
        with self.assertRaises(aims.AimsError) as cm:
            c.call("optimize.toy", "optimize", req)
        self.assertEqual(cm.exception.code, aims.AIMS_E_RANGE)
        self.assertIn("refused", str(cm.exception))


@needs(*SVC_SYMBOLS, "aims_node_host_registry", "aims_node_join", "aims_client_join")
class TestHostedRegistry(ServiceCase):
    def test_join_over_tcp(self):
        host = self.node(unique("reg"))
        reg_addr = host.listen("tcp://127.0.0.1:0")
        host.host_registry(self.registry)
        worker = self.node(unique("wrk"), heartbeat_ms=100)
        worker.listen("ipc://" + os.path.join(self.tmp, "w.sock"))
        worker.join(reg_addr)
        worker.add_handler("echo", echo).start()
        c = self.own(aims.Client(join=reg_addr, sync_ms=50, max_attempts=1,
                                 timeout_ms=2000))
        deadline = time.monotonic() + 15
        while True:
            try:
                got = c.call("echo", "ping", {"s": "remote"})
                break
            except aims.AimsError as exc:
                if exc.code != aims.AIMS_E_NOTFOUND or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.assertEqual(values(got["s"]), b"remote")

    @unittest.skipUnless(hasattr(aims, "EventWatch"), "no event watches")
    def test_event_watch_in_order_and_resumed(self):
        host = self.node(unique("reg"))
        reg_addr = host.listen("tcp://127.0.0.1:0")
        host.host_registry(self.registry)
        c = self.own(aims.Client(sync_ms=20))
        seen, cond = [], threading.Condition()

        def on_event(ev):
            with cond:
                seen.append(ev)
                cond.notify_all()

        def wait_for(pred):
            with cond:
                self.assertTrue(cond.wait_for(lambda: any(pred(e) for e in seen), 15),
                                "events so far: %r" % seen)

        with c.watch(reg_addr, on_event) as w:
            self.assertIsInstance(w, aims.EventWatch)
            worker = self.node(unique("wrk"), heartbeat_ms=100)
            worker.listen("ipc://" + os.path.join(self.tmp, "ev.sock"))
            worker.join(reg_addr)
            worker.add_handler("evecho", echo).start()
            wait_for(lambda e: e.kind == "put" and e.service == "evecho")
            put = next(e for e in seen if e.kind == "put" and e.service == "evecho")
            self.assertTrue(put.address.startswith("ipc://"))
            worker.close()
            wait_for(lambda e: e.kind in ("delete", "expire") and e.id == put.id)
            self.assertEqual(w.errmsg, "")
        revs = [e.revision for e in seen if e.kind != "resync"]
        self.assertEqual(revs, sorted(revs))
        # Resumed from the put: the leave comes again, the put does not.
        again = []
        with c.watch(reg_addr, again.append, epoch=put.epoch, from_revision=put.revision):
            deadline = time.monotonic() + 15
            while not any(e.id == put.id and e.kind != "put" for e in again):
                self.assertLess(time.monotonic(), deadline, "resumed events: %r" % again)
                time.sleep(0.02)
        self.assertFalse(any(e.kind == "put" and e.id == put.id for e in again))
        self.assertTrue(all(e.revision > put.revision for e in again if e.kind != "resync"))
        with self.assertRaises(TypeError):
            c.watch(reg_addr, None)


if __name__ == "__main__":
    unittest.main()


def _hs256_token(key, claims):
    """A compact HS256 JWT made with the standard library (hmac, base64)."""
    import base64
    import hashlib
    import hmac
    b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = b64(hmac.new(key, head + b"." + body, hashlib.sha256).digest())
    return (head + b"." + body + b"." + sig).decode()


@needs(*SVC_SYMBOLS, "aims_policy_create", "aims_node_set_policy", "aims_node_set_audit")
class TestPolicy(ServiceCase):
    KEY = b"a python HS256 key, 32 bytes or more"

    def test_policy_object(self):
        with aims.Policy(text="allow uid:1000 register echo*\ndeny * call admin/*\n",
                         name="py.policy") as pol:
            self.assertTrue(pol.check("uid:1000", "register", "echo-1"))
            self.assertFalse(pol.check("uid:1001", "register", "echo-1"))
            self.assertTrue(pol.check("host", "call", "admin/x"))
            with self.assertRaises(aims.AimsError) as cm:
                pol.load_string("allow a regsiter b\n", "bad.policy")
            self.assertEqual(cm.exception.code, aims.AIMS_E_CORRUPT)
            self.assertIn("bad.policy:1", str(cm.exception))
            pol.set_jwt_hs256(self.KEY).set_jwt_claims("aims", None, 30)
            tok = _hs256_token(self.KEY, {"sub": "alice", "aud": "aims",
                                          "exp": int(time.time()) + 60})
            self.assertEqual(pol.verify_token(tok), "jwt:alice")
            bad = _hs256_token(self.KEY, {"sub": "alice", "aud": "other",
                                          "exp": int(time.time()) + 60})
            with self.assertRaises(aims.AimsError) as cm:
                pol.verify_token(bad)
            self.assertEqual(cm.exception.code, aims.AIMS_E_DENIED)

    def test_node_door(self):
        pol = self.own(aims.Policy(text="allow uid:%d call echo/ping\n"
                                        "allow jwt:alice call echo/*\n" % os.getuid()))
        pol.set_jwt_hs256(self.KEY)
        events = []
        node, _ = self.echo_node()
        node.set_policy(pol).set_audit(events.append)
        ipc = node.listen("ipc://" + os.path.join(self.tmp, "door.sock"))
        tcp = node.listen("tcp://127.0.0.1:0")
        c = self.client()
        x = {"x": b"hi"}
        self.assertIn("x", c.call_addr(ipc, "echo", "ping", x, timeout_ms=5000))
        with self.assertRaises(aims.AimsError) as cm:
            c.call_addr(tcp, "echo", "ping", x, timeout_ms=5000)
        self.assertEqual(cm.exception.code, aims.AIMS_E_DENIED)
        tok = _hs256_token(self.KEY, {"sub": "alice", "exp": int(time.time()) + 60})
        reply = c.call_addr(tcp, "echo", "other", {"x": b"hi", "$auth": tok.encode()},
                            timeout_ms=5000)
        self.assertNotIn("$auth", reply)
        denied = [e for e in events if e["action"] == "denied"]
        self.assertEqual(len(denied), 1)
        self.assertEqual(denied[0]["identity"], "anonymous")
        self.assertTrue(denied[0]["peer"].startswith("tcp://127.0.0.1:"))

    @needs("aims_client_set_token")
    def test_client_token(self):
        pol = self.own(aims.Policy(text="allow jwt:alice call echo/*\n"))
        pol.set_jwt_hs256(self.KEY)
        node, _ = self.echo_node()
        node.set_policy(pol)
        tcp = node.listen("tcp://127.0.0.1:0")
        c = self.client()
        with self.assertRaises(aims.AimsError) as cm:
            c.call_addr(tcp, "echo", "ping", {"x": b"hi"}, timeout_ms=5000)
        self.assertEqual(cm.exception.code, aims.AIMS_E_DENIED)
        c.set_token(_hs256_token(self.KEY, {"sub": "alice", "exp": int(time.time()) + 60}))
        reply = c.call_addr(tcp, "echo", "ping", {"x": b"hi"}, timeout_ms=5000)
        self.assertNotIn("$auth", reply)
        c.set_token(None)
        with self.assertRaises(aims.AimsError):
            c.call_addr(tcp, "echo", "ping", {"x": b"hi"}, timeout_ms=5000)
