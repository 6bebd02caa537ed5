"""A client written only from docs/WIRE.md -- plain sockets and struct, no
libaims import in the client -- calling a real aims-node over tcp://: an
echo call with every dtype, an infer call on a bundle trained by `aims
train`, "$ping"/"$stats", PING/PONG, an ERROR frame for an unknown service,
replies matched by request id when several requests are in flight, and a
frame with a bad header CRC closing the connection. If docs/WIRE.md and the
code drift apart, this fails."""

import socket
import struct
import unittest

from aims_testutil import needs_iris
from test_cli import EXE as CLI
from test_cli_call_plot import IrisNodeCase
from test_daemon import EXE as NODE

# ---- the client: everything below comes from docs/WIRE.md ---------------------------

REQUEST, REPLY, ERROR, PING, PONG, CANCEL = 1, 2, 3, 4, 5, 6
F32, I32, U8, I64, BYTES = 1, 2, 3, 4, 5
ELEM = {F32: ("f", 4), I32: ("i", 4), U8: ("B", 1), I64: ("q", 8), BYTES: ("B", 1)}


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def encode_tensors(tensors):
    """tensors: list of (name, dtype, dims, values or bytes)."""
    out = bytearray(struct.pack("<I", len(tensors)))
    for name, dtype, dims, values in tensors:
        nb = name.encode()
        out += struct.pack("<BBH", dtype, len(dims), len(nb)) + nb
        out += b"".join(struct.pack("<Q", d) for d in dims)
        out += b"\0" * (-len(out) % 8)
        if dtype == BYTES:
            out += bytes(values)
        else:
            fmt, _ = ELEM[dtype]
            out += struct.pack("<%d%s" % (len(values), fmt), *values)
    return bytes(out)


def decode_tensors(p):
    (count,), off, out = struct.unpack_from("<I", p, 0), 4, {}
    for _ in range(count):
        dtype, ndim, nlen = struct.unpack_from("<BBH", p, off)
        off += 4
        name = p[off:off + nlen].decode()
        off += nlen
        dims = list(struct.unpack_from("<%dQ" % ndim, p, off))
        off += 8 * ndim
        off += -off % 8
        n = 1
        for d in dims:
            n *= d
        fmt, size = ELEM[dtype]
        raw = p[off:off + n * size]
        off += n * size
        out[name] = (dtype, dims, raw if dtype == BYTES
                     else list(struct.unpack("<%d%s" % (n, fmt), raw)))
    assert off == len(p), "the last tensor must end the payload"
    return out


def encode_frame(ftype, req_id, service="", method="", payload=b"", status=0, deadline=0,
                 version=2):
    """deadline: the time the call has left, in ns (0: none)."""
    s, m = service.encode(), method.encode()
    head = b"AIMF" + struct.pack("<BBHQQiHHII", version, ftype, 0, req_id, deadline, status,
                                 len(s), len(m), len(payload), len(payload))
    return head + struct.pack("<I", crc32c(head)) + s + m + payload


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def read_frame(sock, version=2):
    h = recv_exact(sock, 44)
    assert h[:4] == b"AIMF" and h[4] == version, h[:5]
    assert struct.unpack_from("<I", h, 40)[0] == crc32c(h[:40]), "header CRC"
    _, ftype, flags, req_id, _, status, slen, mlen, stored, raw = \
        struct.unpack_from("<BBHQQiHHII", h, 4)
    assert flags == 0 and stored == raw  # we never compress, so the node does not either
    rest = recv_exact(sock, slen + mlen + stored)
    return ftype, req_id, status, rest[slen + mlen:]


class WireClient:
    def __init__(self, addr):
        host, port = addr[len("tcp://"):].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send(self, service, method, tensors):
        rid = self.next_id
        self.next_id += 1
        self.sock.sendall(encode_frame(REQUEST, rid, service, method, encode_tensors(tensors)))
        return rid

    def reply(self):
        ftype, rid, status, payload = read_frame(self.sock)
        if ftype == REPLY:
            return rid, 0, decode_tensors(payload)
        assert ftype == ERROR, ftype
        return rid, status, payload.decode("utf-8")

    def call(self, service, method, tensors):
        rid = self.send(service, method, tensors)
        got, status, body = self.reply()
        assert got == rid
        return status, body


# ---- the tests ------------------------------------------------------------------------


@unittest.skipIf(NODE is None or CLI is None, "aims-node / aims not built")
@needs_iris
class WireClientTest(IrisNodeCase):
    TRAIN_ARGS = ("--quiet",)

    @classmethod
    def node_args(cls, bundle):
        return ["--name", "w1", "--echo", "e1", "--infer", "iris=" + bundle]

    def setUp(self):
        self.c = WireClient(self.addr)
        self.addCleanup(self.c.close)

    def test_worked_example_bytes(self):
        # the frame docs/WIRE.md spells out byte by byte
        f = encode_frame(REQUEST, 7, "e1", "run", encode_tensors([("text", BYTES, [2], b"hi")]),
                         deadline=250000000)
        self.assertEqual(len(f), 44 + 2 + 3 + 26)
        self.assertEqual(f[:44], bytes.fromhex("41494d46" "02" "01" "0000" "0700000000000000"
                                               "80b2e60e00000000" "00000000" "0200" "0300"
                                               "1a000000" "1a000000" "3894883e"))
        self.assertEqual(f[49:], bytes.fromhex("01000000" "05010400" "74657874"
                                               "0200000000000000" "00000000" "6869"))

    def test_echo_every_dtype(self):
        status, t = self.c.call("e1", "run", [
            ("a", F32, [2, 2], [1.5, -2.0, 3.25, 0.0]), ("b", I32, [3], [1, -2, 2**31 - 1]),
            ("c", U8, [2], [0, 255]), ("d", I64, [], [-(2**40)]),
            ("text", BYTES, [5], "h\u00e9y!".encode()[:5])])
        self.assertEqual(status, 0, t)
        self.assertEqual(t["a"], (F32, [2, 2], [1.5, -2.0, 3.25, 0.0]))
        self.assertEqual(t["b"][2], [1, -2, 2**31 - 1])
        self.assertEqual(t["c"][2], [0, 255])
        self.assertEqual(t["d"], (I64, [], [-(2**40)]))
        self.assertEqual(t["text"][2], "h\u00e9y!".encode()[:5])
        self.assertEqual(t["pid"], (I64, [], [self.node.pid]))

    def test_infer_predict(self):
        rows = [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]
        status, t = self.c.call("iris", "predict", [("x", F32, [2, 4], rows)])
        self.assertEqual(status, 0, t)
        self.assertEqual(t["y"][2], [0.0, 2.0])
        status, t = self.c.call("iris", "predict", [("x", F32, [2, 4], rows),
                                                    ("output", I32, [], [2])])
        self.assertEqual(status, 0, t)
        self.assertEqual(t["y"][1], [2, 3])
        self.assertAlmostEqual(sum(t["y"][2][:3]), 1.0, places=4)

    def test_errors_builtins_ping(self):
        status, text = self.c.call("nosuch", "run", [])
        self.assertEqual(status, 8)  # AIMS_E_NOTFOUND
        self.assertIn("no service nosuch", text)
        status, text = self.c.call("iris", "predict", [("x", F32, [1, 2], [1.0, 2.0])])
        self.assertEqual(status, 3)  # AIMS_E_INVAL
        status, t = self.c.call("iris", "$stats", [])
        self.assertEqual(status, 0)
        self.assertGreaterEqual(t["requests"][2][0], 1)
        status, t = self.c.call("e1", "$ping", [])
        self.assertEqual((status, t), (0, {}))
        self.c.sock.sendall(encode_frame(PING, 99))
        ftype, rid, status, payload = read_frame(self.c.sock)
        self.assertEqual((ftype, rid, status, payload), (PONG, 99, 0, b""))

    def test_deadline_is_time_left(self):
        # 5 s left: served (read as an absolute time, 5 s after 1970, it would have passed)
        p = encode_tensors([("i", I32, [], [1])])
        self.c.sock.sendall(encode_frame(REQUEST, 41, "e1", "run", p, deadline=5 * 10**9))
        ftype, rid, status, _ = read_frame(self.c.sock)
        self.assertEqual((ftype, rid, status), (REPLY, 41, 0))
        # 1 ns left: past on arrival, refused with AIMS_E_TIMEOUT by the node itself
        self.c.sock.sendall(encode_frame(REQUEST, 42, "e1", "run", p, deadline=1))
        ftype, rid, status, text = read_frame(self.c.sock)
        self.assertEqual((ftype, rid, status), (ERROR, 42, 12), text)

    def test_version1_refused_in_version1(self):
        p = encode_tensors([("i", I32, [], [1])])
        self.c.sock.sendall(encode_frame(REQUEST, 43, "e1", "run", p, version=1))
        ftype, rid, status, text = read_frame(self.c.sock, version=1)
        self.assertEqual((ftype, rid, status), (ERROR, 43, 7))  # AIMS_E_UNSUPPORTED
        self.assertIn(b"version 1", text)
        self.assertEqual(self.c.call("e1", "$ping", [])[0], 0)  # the connection stays usable

    def test_pipelined_requests_matched_by_id(self):
        ids = [self.c.send("e1", "run", [("i", I32, [], [k])]) for k in range(20)]
        got = {}
        for _ in ids:
            rid, status, t = self.c.reply()
            self.assertEqual(status, 0)
            got[rid] = t["i"][2][0]
        self.assertEqual(got, {rid: k for k, rid in enumerate(ids)})

    def test_bad_crc_closes_connection(self):
        f = bytearray(encode_frame(REQUEST, 1, "e1", "run", encode_tensors([])))
        f[40] ^= 0xFF
        self.c.sock.sendall(bytes(f))
        with self.assertRaises((ConnectionError, OSError)):
            read_frame(self.c.sock)
        # the node is still there for others
        c2 = WireClient(self.addr)
        self.addCleanup(c2.close)
        self.assertEqual(c2.call("e1", "$ping", [])[0], 0)


if __name__ == "__main__":
    unittest.main()
