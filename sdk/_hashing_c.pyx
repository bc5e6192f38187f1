# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""FNV-1a 32-bit in C, compiled at install when a C compiler is present (``hatch_build.py``).

The same functions as :mod:`sdk.hashing`'s pure-Python reference (``fnv1a32_py`` and
``unit_py``), which stays the definition: ``tests/sdk/test_hashing_compiled.py`` pins both
equal on the contract vectors and on random strings of every kind of Unicode.
"""

from libc.stdint cimport uint32_t

cdef uint32_t _PRIME = 0x01000193
cdef uint32_t _BASIS = 0x811C9DC5


cdef inline uint32_t _fnv(const unsigned char* p, Py_ssize_t n, uint32_t h) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ p[i]) * _PRIME
    return h


def fnv1a32(bytes data, unsigned long basis=0x811C9DC5):
    """The FNV-1a 32-bit hash of ``data`` from state ``basis``."""
    cdef const unsigned char* p = data
    return _fnv(p, len(data), <uint32_t>basis)


def unit_from(bytes data, unsigned long basis):
    """``fnv1a32(str(fnv1a32(data, basis)).encode()) % 10000 / 10000``: hash version 2's number
    in [0, 1) from the state after the seed."""
    cdef const unsigned char* p = data
    cdef uint32_t first = _fnv(p, len(data), <uint32_t>basis)
    cdef unsigned char digits[10]
    cdef int n = 0
    cdef int i
    cdef unsigned char tmp
    if first == 0:
        digits[0] = 48
        n = 1
    while first > 0:
        digits[n] = <unsigned char>(48 + first % 10)
        first //= 10
        n += 1
    for i in range(n // 2):  # most significant digit first
        tmp = digits[i]
        digits[i] = digits[n - 1 - i]
        digits[n - 1 - i] = tmp
    return <double>(_fnv(digits, n, _BASIS) % 10000) / 10000.0
