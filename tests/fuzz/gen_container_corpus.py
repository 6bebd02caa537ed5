#!/usr/bin/env python3
"""Regenerate the seed corpus for fuzz_container (tests/fuzz/corpus/container).

Writes a few valid containers (format in src/codec/aimsi_codec.h) and damaged
variants that each aim at one reader check, with the header CRC recomputed so
the damage reaches that check. zstd frames come from the zstd command-line
tool (the corpus is committed; this script only needs re-running when the
format changes):  python3 tests/fuzz/gen_container_corpus.py [OUT_DIR]
"""
import os
import struct
import subprocess
import sys


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def tag(s):
    return struct.unpack("<I", s.encode())[0]


def zframe(raw, check=True, size=True):
    args = ["zstd", "-q", "-c", "-3"]
    args.append("--check" if check else "--no-check")
    if size:
        args.append("--stream-size=%d" % len(raw))
    return subprocess.run(args, input=raw, stdout=subprocess.PIPE, check=True).stdout


def container(sections, kind=1, major=1, minor=0, count=None, layout=None):
    """sections: list of (tag, flags, stored_bytes, raw_size).
    layout: optional list of (offset, stored) overriding the natural layout."""
    n = len(sections)
    table_end = 24 + 32 * n
    table = b""
    payload = b""
    for i, (t, flags, stored, raw) in enumerate(sections):
        off = table_end + len(payload)
        slen = len(stored)
        if layout is not None:
            off, slen = layout[i]
        table += struct.pack("<IIQQQ", t, flags, off, slen, raw)
        payload += stored
    head = b"AIMSCTR\0" + struct.pack("<HHII", major, minor, kind, n if count is None else count)
    crc = crc32c(table, crc32c(head))
    # raw (flags bit 0 clear) payloads are covered by the CRC too, in table order
    data = head + b"\0\0\0\0" + table + payload
    for i, (t, flags, stored, raw) in enumerate(sections):
        off = table_end + sum(len(x[2]) for x in sections[:i])
        slen = len(stored)
        if layout is not None:
            off, slen = layout[i]
        if not flags & 1 and slen > 0 and off + slen <= len(data):
            crc = crc32c(data[off:off + slen], crc)
    return head + struct.pack("<I", crc) + table + payload


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "container")
    os.makedirs(out, exist_ok=True)
    text = b"name=demo;rows=16;cols=4"
    feat = b"".join(struct.pack("<f", (i % 37) * 0.25) for i in range(1024))
    labels = bytes(i % 10 for i in range(512))
    zf = zframe(feat)
    zl = zframe(labels)
    small = container([(tag("META"), 0, text, len(text)),
                       (tag("EMPT"), 0, b"", 0),
                       (tag("FEAT"), 1, zf, len(feat)),
                       (tag("LABL"), 1, zl, len(labels))])
    files = {
        "valid_dataset": small,
        "valid_empty": container([], kind=4),
        "valid_model_minor7": container([(tag("WGHT"), 1, zf, len(feat)),
                                         (tag("NEWF"), 6, b"future", 6)], kind=3, minor=7),
        "trunc_header": small[:17],
        "trunc_table": small[:24 + 40],
        "trunc_payload": small[:-1],
        "bad_magic": b"AIMSCTX\0" + small[8:],
        "bad_crc": small[:20] + bytes([small[20] ^ 1]) + small[21:],
        "flip_payload": small[:-9] + bytes([small[-9] ^ 0x10]) + small[-8:],
        "major2": container([(tag("META"), 0, text, len(text))], major=2),
        "kind0": container([(tag("META"), 0, text, len(text))], kind=0),
        "count_huge": container([(tag("META"), 0, text, len(text))], count=2000),
        "dup_tags": container([(tag("META"), 0, text, len(text)),
                               (tag("META"), 0, text, len(text))]),
        "overlap": container([(tag("AAAA"), 0, text, len(text)),
                              (tag("BBBB"), 0, text, len(text))],
                             layout=[(88, len(text)), (90, len(text))]),
        "offset_past_end": container([(tag("META"), 0, text, len(text))],
                                     layout=[(1 << 40, len(text))]),
        "offset_in_table": container([(tag("META"), 0, text, len(text))],
                                     layout=[(30, len(text))]),
        "raw_size_mismatch": container([(tag("META"), 0, text, len(text) + 1)]),
        "z_no_checksum": container([(tag("FEAT"), 1, zframe(feat, check=False), len(feat))]),
        "z_no_size": container([(tag("FEAT"), 1, zframe(feat, size=False), len(feat))]),
        "z_two_frames": container([(tag("FEAT"), 1, zf + zf, 2 * len(feat))]),
        "z_size_mismatch": container([(tag("FEAT"), 1, zf, len(feat) - 4)]),
        "z_claims_huge": container([(tag("FEAT"), 1, zf, 1 << 34)]),
        "z_garbage": container([(tag("FEAT"), 1, zf[:12] + bytes(len(zf) - 12), len(feat))]),
    }
    for name, data in files.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote %d files to %s" % (len(files), out))


if __name__ == "__main__":
    main()
