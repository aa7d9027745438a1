"""The strict binary encoding every format object is built from (docs/format.md "Encoding").

Fields are positional, so an object cannot carry a field twice, and the reader refuses
truncation, trailing bytes, over-long counts and invalid UTF-8, always as ``MalformedError``:

- ``u8``, ``u32``, ``u64``: unsigned big-endian integers (``u64`` values are below 2**63, so
  they fit a signed 64-bit integer in any language);
- ``blob``: a ``u32`` length, then that many bytes;
- ``text``: a ``blob`` holding UTF-8;
- a list: a ``u32`` count, then the items.
"""

from __future__ import annotations

import struct

from certfleet.bundle.errors import MalformedError

U63_LIMIT = 1 << 63
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


class Writer:
    """Builds an encoding; the ``put`` methods return the writer so calls can chain."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def raw(self, data: bytes) -> Writer:
        self._parts.append(bytes(data))
        return self

    def u8(self, value: int) -> Writer:
        return self.raw(bytes((value,)))

    def u32(self, value: int) -> Writer:
        return self.raw(_U32.pack(value))

    def u64(self, value: int) -> Writer:
        if not 0 <= value < U63_LIMIT:
            raise ValueError("u64 field out of range 0..2**63-1")
        return self.raw(_U64.pack(value))

    def blob(self, data: bytes) -> Writer:
        return self.u32(len(data)).raw(data)

    def text(self, value: str) -> Writer:
        return self.blob(value.encode("utf-8"))

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads an encoding strictly; every failure is a ``MalformedError`` naming the object."""

    def __init__(self, data: bytes, object_name: str) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedError(object_name, "is not bytes")
        self._data = bytes(data)
        self._pos = 0
        self.object_name = object_name

    def fail(self, reason: str) -> MalformedError:
        return MalformedError(self.object_name, reason)

    @property
    def position(self) -> int:
        return self._pos

    def raw(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise self.fail(f"truncated at byte {len(self._data)} (needs {end})")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return self.raw(1)[0]

    def u32(self) -> int:
        value: int = _U32.unpack(self.raw(4))[0]
        return value

    def u64(self) -> int:
        value: int = _U64.unpack(self.raw(8))[0]
        if value >= U63_LIMIT:
            raise self.fail("integer field above 2**63-1")
        return value

    def blob(self, max_size: int | None = None) -> bytes:
        size = self.u32()
        if max_size is not None and size > max_size:
            raise self.fail(f"field of {size} bytes exceeds its limit of {max_size}")
        return self.raw(size)

    def blob_view(self) -> memoryview:
        """``blob()`` as a view of the bytes read, not a copy (for a large ciphertext)."""
        size = self.u32()
        start, end = self._pos, self._pos + size
        if end > len(self._data):
            raise self.fail(f"truncated at byte {len(self._data)} (needs {end})")
        self._pos = end
        return memoryview(self._data)[start:end]

    def text(self, max_size: int | None = None) -> str:
        data = self.blob(max_size)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self.fail("text field is not valid UTF-8") from err

    def count(self, min_item_size: int, max_count: int | None = None) -> int:
        """Read a list count, refusing one the remaining bytes could not possibly hold."""
        value = self.u32()
        if max_count is not None and value > max_count:
            raise self.fail(f"list of {value} items exceeds its limit of {max_count}")
        if value * min_item_size > len(self._data) - self._pos:
            raise self.fail(f"list of {value} items is longer than the data left")
        return value

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail(f"{len(self._data) - self._pos} trailing bytes")
