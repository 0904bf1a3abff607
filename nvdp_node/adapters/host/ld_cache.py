"""Read glibc's ``/etc/ld.so.cache`` (format ``glibc-ld.so.cache1.1``) without running ldconfig.

``driver_files.py`` finds the driver's user-space libraries where the dynamic
loader finds them, as the toolkit's ldcache locator does; the cache of a
containerised driver lies under its root, where ``ldconfig -p`` (which reads
only the host's) cannot help. Layout (glibc ``sysdeps/generic/dl-cache.h``):
a 48-byte header (magic, entry count, string table size, flags, extension
offset), then 24-byte entries (flags, key and value offsets into the file,
OS version, hwcaps); key = soname, value = the library's path.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = b"glibc-ld.so.cache1.1"
OLD_MAGIC = b"ld.so-1.7.0"  # the pre-2.32 format; Debian 12's glibc 2.36 no longer writes it
_HEADER = struct.Struct("<20sIIB3xI12x")
_ENTRY = struct.Struct("<iIIIQ")
_OLD_HEADER = struct.Struct("<11sxI")
_OLD_ENTRY = struct.Struct("<iII")
MAX_CACHE_BYTES = 64 * 2**20


class LdCacheError(ValueError):
    """The file is not a cache this reader understands; the text says why."""


def read_ld_cache(path: Path) -> list[tuple[str, str]]:
    """(soname, library path) for every entry of the cache at ``path``, in file order."""
    with open(path, "rb") as f:
        data = f.read(MAX_CACHE_BYTES + 1)
    if len(data) > MAX_CACHE_BYTES:
        raise LdCacheError(f"{path}: larger than {MAX_CACHE_BYTES} bytes")
    return parse_ld_cache(data, str(path))


def parse_ld_cache(data: bytes, name: str = "ld.so.cache") -> list[tuple[str, str]]:
    start = 0
    if data.startswith(OLD_MAGIC):  # the old table first, the new format after it (8-byte aligned)
        if len(data) < _OLD_HEADER.size:
            raise LdCacheError(f"{name}: truncated header")
        _, count = _OLD_HEADER.unpack_from(data)
        start = _OLD_HEADER.size + count * _OLD_ENTRY.size
        start += -start % 8
    if not data.startswith(MAGIC, start):
        raise LdCacheError(f"{name}: not a glibc ld.so.cache (no {MAGIC.decode()} header)")
    if len(data) < start + _HEADER.size:
        raise LdCacheError(f"{name}: truncated header")
    _, count, _strings, _flags, _ext = _HEADER.unpack_from(data, start)
    first = start + _HEADER.size
    if first + count * _ENTRY.size > len(data):
        raise LdCacheError(f"{name}: {count} entries do not fit in {len(data)} bytes")
    entries = []
    for n in range(count):
        _eflags, key, value, _os, _hwcap = _ENTRY.unpack_from(data, first + n * _ENTRY.size)
        entries.append((_string(data, key, name), _string(data, value, name)))
    return entries


def _string(data: bytes, offset: int, name: str) -> str:
    end = data.find(b"\0", offset)
    if offset >= len(data) or end < 0:
        raise LdCacheError(f"{name}: string offset {offset} outside the file")
    return data[offset:end].decode("utf-8", "surrogateescape")
