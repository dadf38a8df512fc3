"""XXH3-64 (seed 0) for inputs of up to 240 bytes, in pure Python.

The runner uses it to check that the key_hash column holds xxh3-64 of the
caller's bearer key, as the contract says. Longer inputs are not needed here.
"""

import struct

_M64 = (1 << 64) - 1
_P64_1 = 11400714785074694791
_P64_2 = 14029467366897019727
_P64_3 = 1609587929392839161

_SECRET = bytes([
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
])


def _u64(b, i):
    return struct.unpack_from("<Q", b, i)[0]


def _u32(b, i):
    return struct.unpack_from("<I", b, i)[0]


def _mulfold(x, y):
    p = (x & _M64) * (y & _M64)
    return ((p >> 64) ^ p) & _M64


def _avalanche(x):
    x ^= x >> 37
    x = (x * 0x165667919e3779f9) & _M64
    return x ^ (x >> 32)


def _avalanche_small(x):
    x ^= x >> 33
    x = (x * _P64_2) & _M64
    x ^= x >> 29
    x = (x * _P64_3) & _M64
    return x ^ (x >> 32)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & _M64


def _rrmxmx(h, n):
    h ^= _rotl(h, 49) ^ _rotl(h, 24)
    h = (h * 0x9fb21c651e98df25) & _M64
    h ^= (h >> 35) + n
    h = (h * 0x9fb21c651e98df25) & _M64
    return h ^ (h >> 28)


def _k(i):
    return _u64(_SECRET, i)


def xxh3_64(data):
    """XXH3-64 of data (bytes or str), seed 0."""
    if isinstance(data, str):
        data = data.encode()
    n = len(data)
    p = data
    if n <= 16:
        if n > 8:
            lo = _u64(p, 0) ^ (_k(24) ^ _k(32))
            hi = _u64(p, n - 8) ^ (_k(40) ^ _k(48))
            folded = _mulfold(lo, hi)
            rev = int.from_bytes(lo.to_bytes(8, "little"), "big")
            return _avalanche((n + rev + hi + folded) & _M64)
        if n > 3:
            in1 = _u32(p, 0)
            in2 = _u32(p, n - 4)
            in64 = (in2 + (in1 << 32)) & _M64
            return _rrmxmx(in64 ^ (_k(8) ^ _k(16)), n)
        if n == 0:
            return 0x2d06800538d394c2
        if n == 3:
            acc = (struct.unpack_from("<H", p, 0)[0] << 16) + p[2] + (3 << 8)
        elif n == 2:
            acc = ((struct.unpack_from("<H", p, 0)[0] * ((1 << 24) + 1)) >> 8) + (2 << 8)
        else:
            acc = p[0] * ((1 << 24) + (1 << 16) + 1) + (1 << 8)
        acc &= _M64
        acc ^= (_u32(_SECRET, 0) ^ _u32(_SECRET, 4))
        return _avalanche_small(acc)
    if n <= 128:
        acc = (n * _P64_1) & _M64
        if n > 32:
            if n > 64:
                if n > 96:
                    acc += _mulfold(_u64(p, 48) ^ _k(96), _u64(p, 56) ^ _k(104))
                    acc += _mulfold(_u64(p, n - 64) ^ _k(112), _u64(p, n - 56) ^ _k(120))
                acc += _mulfold(_u64(p, 32) ^ _k(64), _u64(p, 40) ^ _k(72))
                acc += _mulfold(_u64(p, n - 48) ^ _k(80), _u64(p, n - 40) ^ _k(88))
            acc += _mulfold(_u64(p, 16) ^ _k(32), _u64(p, 24) ^ _k(40))
            acc += _mulfold(_u64(p, n - 32) ^ _k(48), _u64(p, n - 24) ^ _k(56))
        acc += _mulfold(_u64(p, 0) ^ _k(0), _u64(p, 8) ^ _k(8))
        acc += _mulfold(_u64(p, n - 16) ^ _k(16), _u64(p, n - 8) ^ _k(24))
        return _avalanche(acc & _M64)
    if n <= 240:
        acc = (n * _P64_1) & _M64
        for i in range(8):
            acc += _mulfold(_u64(p, 16 * i) ^ _k(16 * i), _u64(p, 16 * i + 8) ^ _k(16 * i + 8))
        acc = _avalanche(acc & _M64)
        top = n & ~15
        for i in range(128, top, 16):
            acc += _mulfold(_u64(p, i) ^ _k(i - 125), _u64(p, i + 8) ^ _k(i - 117))
        acc += _mulfold(_u64(p, n - 16) ^ _k(119), _u64(p, n - 8) ^ _k(127))
        return _avalanche(acc & _M64)
    raise ValueError("xxh3_64: inputs over 240 bytes are not supported here")


def xxh3_hex(data):
    return "%016x" % xxh3_64(data)
