"""How a CSV file's bytes become text: its encoding and its delimiter, detected or given.

Real-world CSV files come from spreadsheets and old systems: Windows-1252 (``Montr\\xe9al``),
UTF-8 with a byte-order mark (Excel's "CSV UTF-8"), UTF-16 (Excel's "Unicode text"),
semicolons where the decimal separator is a comma, tabs, pipes. Reading them as UTF-8 and
commas gives a traceback, a ``binary`` column of raw bytes, or one column ``income;region``.

Detection looks at a bounded sample from the start of the file (:data:`SAMPLE_BYTES`), never the
whole file:

1. a byte-order mark names the encoding (UTF-8, UTF-16 LE/BE);
2. bytes that decode as UTF-8 are UTF-8;
3. NUL bytes mean UTF-16 without a mark when every other byte is NUL, else binary data
   (an image, a spreadsheet, a zip), which is refused;
4. otherwise ``charset-normalizer`` ranks the code pages that decode the sample; when
   Windows-1252 is among the most plausible, it wins (the legacy Western default, and a superset
   of Latin-1's printable range); else its best guess (``cp1250``, ``cp1251``, ``cp932`` …).
   A short sample can fit several code pages equally well (Czech ``Dvořák`` in cp1250 is valid
   cp1252 too): there Windows-1252 wins, and the caller passes ``encoding=`` to say otherwise.

A file whose sample is plain ASCII but which holds a non-UTF-8 byte further on is detected again
from the bytes around that byte (:class:`Redetect`), since nothing read so far depends on the
choice. Text is transcoded to UTF-8 as it streams (:class:`TextReader`), so the CSV parser only
ever sees valid UTF-8: text never silently becomes bytes. An undecodable byte is an
:class:`~civicml.core.errors.InvalidInputError` naming the line and the encoding to try.

The delimiter is the one of ``,`` ``;`` tab ``|`` that splits the sampled records (quoted fields
respected, by :mod:`csv`) into the same number (> 1) of fields as the header most consistently;
ties go to the comma. A file with one column has no delimiter to find and is read with commas.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError

__all__ = [
    "DELIMITERS",
    "SAMPLE_BYTES",
    "Redetect",
    "TextOptions",
    "TextReader",
    "check_delimiter",
    "check_encoding",
    "count_byte",
    "detect_delimiter",
    "detect_encoding",
    "undecodable",
]

#: Bytes from the start of a file that encoding and delimiter detection look at.
SAMPLE_BYTES = 64 << 10
#: The delimiters detection chooses from, in order of preference.
DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_NAMES = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_WESTERN = "cp1252"
#: How much more "chaos" (charset-normalizer's mess ratio) Windows-1252 may show than the best
#: guess and still win: on a short sample a rare code page (cp775) can fit marginally better.
_CHAOS_MARGIN = 0.1
_MAX_CONTROL_SHARE = 0.01
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v")
_SAMPLE_RECORDS = 200
_ENCODING_HINT = (
    "Pass the file's encoding, e.g. encoding='cp1252' (CLI: --encoding cp1252, REST: "
    "?encoding=cp1252); spreadsheets can also save as 'CSV UTF-8'."
)


@dataclass(frozen=True, slots=True)
class TextOptions:
    """How a CSV source is read: its encoding (a Python codec name) and field delimiter."""

    encoding: str
    delimiter: str
    encoding_given: bool = False
    delimiter_given: bool = False

    def record(self) -> dict[str, str]:
        """What a dataset version records as its ``read_options``."""
        return {"encoding": self.encoding, "delimiter": self.delimiter}

    @property
    def delimiter_name(self) -> str:
        """``'comma'``, ``'semicolon'``, ``'tab'``, ``'pipe'`` or the character quoted."""
        return _DELIMITER_NAMES.get(self.delimiter, repr(self.delimiter))


class Redetect(Exception):
    """The encoding detected from a plain-ASCII sample was wrong: read again with this one."""

    def __init__(self, encoding: str) -> None:
        super().__init__(encoding)
        self.encoding = encoding


# Checking what the user gave --------------------------------------------------------------------
def check_encoding(encoding: str | None) -> str | None:
    """The Python codec name of ``encoding`` (``'latin-1'`` → ``'iso8859-1'``); None stays None.

    Raises:
        InvalidInputError: Python knows no text encoding of that name.
    """
    if encoding is None:
        return None
    clean = encoding.strip()
    try:
        info = codecs.lookup(clean)
        codecs.getincrementaldecoder(clean)
    except LookupError:
        info = None
    if info is None or not clean or not getattr(info, "_is_text_encoding", True):
        raise InvalidInputError(
            f"Encoding {encoding[:64]!r} is not a known text encoding.",
            hint="Use a name such as utf-8, utf-8-sig, utf-16, cp1252 or latin-1, or leave it "
            "out to detect it.",
        )
    return info.name


def check_delimiter(delimiter: str | None) -> str | None:
    """One delimiter character; ``'\\t'`` (backslash t) and ``'tab'`` mean a tab.

    Raises:
        InvalidInputError: Not one character, or a quote, line break or NUL.
    """
    if delimiter is None:
        return None
    value = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(delimiter, delimiter)
    if len(value) != 1 or value in '"\r\n\x00':
        raise InvalidInputError(
            f"Delimiter {delimiter[:16]!r} is not usable: it must be one character other than a "
            "double quote or a line break.",
            hint="Use one of ',', ';', '|' or a tab ('\\t'; CLI: --delimiter ';'), or leave it "
            "out to detect it.",
        )
    return value


# Detection ---------------------------------------------------------------------------------------
def detect_encoding(sample: bytes, label: str, *, complete: bool) -> str:
    """The encoding of ``sample`` (the first bytes of a source).

    Args:
        sample: Up to :data:`SAMPLE_BYTES` from the start of the source.
        label: How messages name the source.
        complete: Whether ``sample`` is the whole source (else its end may cut a character).

    Raises:
        InvalidInputError: The bytes are binary data, not text in any encoding.
    """
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=complete)
    except UnicodeDecodeError:
        pass
    else:
        if b"\x00" not in sample:
            return "utf-8"
    if b"\x00" in sample:
        wide = _utf16_without_bom(sample)
        if wide is None:
            raise _binary(label, "it holds NUL bytes")
        return wide
    return _guess_code_page(sample, label)


def _utf16_without_bom(sample: bytes) -> str | None:
    """``utf-16-le``/``-be`` when the NULs sit at every odd/even byte (mostly-ASCII UTF-16)."""
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    odd_nuls = sample[1 : 2 * pairs : 2].count(0) / pairs
    even_nuls = sample[0 : 2 * pairs : 2].count(0) / pairs
    if odd_nuls >= 0.9 and even_nuls == 0:
        return "utf-16-le"
    if even_nuls >= 0.9 and odd_nuls == 0:
        return "utf-16-be"
    return None


def _guess_code_page(sample: bytes, label: str) -> str:
    from charset_normalizer import from_bytes

    results = list(from_bytes(sample))
    if not results:
        raise _binary(label, "its bytes are not text in any encoding civicml can recognise")
    best = results[0]
    plausible = [r for r in results if r.chaos <= best.chaos + _CHAOS_MARGIN]
    if any(_WESTERN in r.could_be_from_charset for r in plausible):
        return _WESTERN
    return codecs.lookup(best.encoding).name


def redetect(window: bytes) -> str | None:
    """The encoding of bytes around a non-UTF-8 byte found after a plain-ASCII sample."""
    try:
        found = _guess_code_page(window, "")
    except InvalidInputError:
        return None
    return None if found == "utf-8" else found


def detect_delimiter(text: str, *, complete: bool) -> str:
    """The delimiter of the sampled ``text`` (UTF-8 decoded start of a CSV source).

    Each candidate splits the sampled records with :mod:`csv` (so quoted fields may hold any of
    them); the one whose records most often have the header's field count (> 1) wins, ties by
    the order of :data:`DELIMITERS`. No candidate splitting the header: a one-column file, read
    with commas.
    """
    if not complete:  # the sample may end inside a record: drop the partial last line
        cut = text.rfind("\n")
        text = text[: cut + 1] if cut > 0 else text
    best, best_score = ",", 0.0
    for delimiter in DELIMITERS:
        counts = _field_counts(text, delimiter)
        if not counts or counts[0] < 2:
            continue
        score = sum(1 for n in counts if n == counts[0]) / len(counts)
        if score > best_score:
            best, best_score = delimiter, score
    return best


def _field_counts(text: str, delimiter: str) -> list[int]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=False)
    counts: list[int] = []
    try:
        for row in reader:
            if row and any(field.strip() for field in row):
                counts.append(len(row))
            if len(counts) >= _SAMPLE_RECORDS:
                break
    except csv.Error:
        return counts
    return counts


def check_text(text: str, label: str) -> None:
    """Refuse decoded ``text`` that is mostly control characters: binary data, not a CSV."""
    if not text:
        return
    controls = sum(
        1
        for ch in text
        if (ch < " " and ch not in _ALLOWED_CONTROLS) or "\x7f" <= ch <= "\x9f" or ch == "\x00"
    )
    if "\x00" in text or (controls >= 4 and controls / len(text) > _MAX_CONTROL_SHARE):
        raise _binary(label, f"{controls:,} of its first {len(text):,} characters are controls")


def undecodable(label: str, encoding: str, err: UnicodeError) -> InvalidInputError:
    """The error for bytes a codec refuses as a whole (not at one byte)."""
    return InvalidInputError(
        f"{label} cannot be read as {encoding} text: {err}.",
        hint="Pass the file's encoding, e.g. encoding='utf-16-le' or 'cp1252' (CLI: "
        "--encoding), or leave it out to detect it.",
    )


def _binary(label: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"{label} does not look like CSV text: {why} (binary data such as an image, a zip or an "
        "Excel workbook?).",
        hint="Ingest a CSV text file: export spreadsheets with 'Save As' → 'CSV UTF-8'. If it "
        "is text in an unusual encoding, pass encoding=... (CLI: --encoding); for Parquet, "
        "pass format='parquet'.",
    )


def count_byte(data: bytes, byte: int) -> int:
    """How often ``byte`` occurs in ``data``: ``data.count(bytes([byte]))``, about ten times as
    fast on large blocks (numpy's vectorised compare; ``bytes.count`` goes byte by byte)."""
    if len(data) < _VECTOR_COUNT_BYTES:
        return data.count(bytes((byte,)))
    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == byte))


_VECTOR_COUNT_BYTES = 1 << 16


def valid_utf8(data: Any) -> bool:
    """Whether ``data`` (bytes or a memoryview) is valid UTF-8, as Python's strict ``utf-8``
    codec judges it (overlong forms, surrogates and code points past U+10FFFF refused), checked
    by Arrow's validator without building any text: about 20x faster than ``bytes.decode``."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    array = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def _whole_characters(data: bytes) -> int:
    """The length of ``data`` without a UTF-8 character its end cuts short: bytes from the last
    lead byte on when fewer follow it than it announces (the rest of the data is not judged)."""
    end = len(data)
    for back in range(1, min(4, end) + 1):
        byte = data[end - back]
        if byte < 0x80:  # ASCII: nothing is cut
            return end
        if byte >= 0xC0:  # a lead byte: 110xxxxx needs 2 bytes, 1110xxxx 3, 11110xxx 4
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return end - back if back < need else end
    return end  # only continuation bytes: invalid, and judged with the rest


# Streaming transcoder ----------------------------------------------------------------------------
def _ascii_compatible(encoding: str) -> bool:
    """Whether every ASCII byte is the same character alone, whatever came before: UTF-8 and the
    single-byte code pages (not UTF-16/32, UTF-7 or the multi-byte East Asian encodings)."""
    name = codecs.lookup(encoding).name
    return name in ("utf-8", "utf-8-sig", "ascii") or name.startswith(("cp125", "iso8859-"))


class TextReader(io.RawIOBase):
    """A byte reader over ``raw`` that yields the same text re-encoded as UTF-8.

    Decodes incrementally (a character split across reads is kept for the next one) and strictly:
    an undecodable byte raises :class:`InvalidInputError` with its line number, or
    :class:`Redetect` when the encoding was detected as UTF-8 from plain ASCII and every byte so
    far was ASCII (so another encoding reads them identically).

    Args:
        raw: A readable binary source (the hashing reader of the ingest pipeline).
        options: The encoding to decode with.
        label: How messages name the source.
        block: Raw bytes read per fill.
    """

    def __init__(self, raw: Any, options: TextOptions, label: str, block: int = 1 << 20) -> None:
        self._raw = raw
        self._options = options
        self._label = label
        self._block = block
        self._decoder = codecs.getincrementaldecoder(options.encoding)("strict")
        self._buffer = bytearray()
        self._eof = False
        self._taken_lines = 0  # line breaks in the bytes handed out so far
        self._ascii = True
        self._started = False
        self._ascii_compatible = _ascii_compatible(options.encoding)
        self._utf8 = codecs.lookup(options.encoding).name in ("utf-8", "utf-8-sig")

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while not self._eof:
                self._fill()
            return self._take(len(self._buffer))
        while len(self._buffer) < size and not self._eof:
            self._fill()
        return self._take(min(size, len(self._buffer)))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    @property
    def line(self) -> int:
        """The number of the line the next byte read belongs to (counted from 1)."""
        return self._taken_lines + 1

    def read_lines(self, size: int) -> bytes:
        """At least ``size`` bytes (fewer only at the end) up to the end of a line: what
        ``read(size) + readline()`` returns, in one copy."""
        while len(self._buffer) < size and not self._eof:
            self._fill()
        return self._take_line(max(min(size, len(self._buffer)) - 1, 0))

    def readline(self, size: int | None = -1) -> bytes:
        return self._take_line(0)

    def _take_line(self, start: int) -> bytes:
        """The buffer up to the first line break at or after ``start`` (or to the end)."""
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                return self._take(end + 1)
            if self._eof:
                return self._take(len(self._buffer))
            start = len(self._buffer)
            self._fill()

    def _take(self, n: int) -> bytes:
        with memoryview(self._buffer) as view:
            data = bytes(view[:n])
        del self._buffer[:n]
        self._taken_lines += count_byte(data, 0x0A)  # line breaks
        return data

    def _fill(self) -> None:
        chunk: bytes = self._raw.read(self._block)
        final = not chunk
        if (
            self._ascii_compatible
            and chunk
            and chunk.isascii()
            and not self._decoder.getstate()[0]  # no partial character waiting
        ):  # the common case, byte for byte the same in UTF-8: no decoding or copying
            self._started = True
            self._buffer += chunk
            return
        if self._utf8 and self._started and chunk and not self._decoder.getstate()[0]:
            whole = _whole_characters(chunk)
            if valid_utf8(memoryview(chunk)[:whole]) and self._hold(chunk[whole:]):
                self._ascii = False  # valid UTF-8 already (an ASCII chunk took the first path)
                self._buffer += chunk[:whole] if whole < len(chunk) else chunk
                return
            # not UTF-8: the decoder finds where, for the message (or another encoding)
        held = self._decoder.getstate()[0]  # the start of a character split by the last read
        try:
            text = self._decoder.decode(chunk, final=final)
        except UnicodeDecodeError as err:
            raise self._decode_error(err) from err
        except UnicodeError as err:  # e.g. 'utf-16' on bytes without a byte-order mark
            raise undecodable(self._label, self._options.encoding, err) from err
        if self._ascii and chunk and not chunk.isascii():
            self._ascii = False
        if self._utf8 and self._started:  # valid UTF-8 already: keep the bytes, not the text
            left = len(self._decoder.getstate()[0])  # may hold more than this chunk gave
            data = held + chunk
            data = data[: len(data) - left] if left else data
            self._buffer += data
            self._eof = final
            return
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")  # a mark left by an explicit utf-8 / utf-16-le
        self._buffer += text.encode("utf-8")
        self._eof = final

    def _hold(self, tail: bytes) -> bool:
        """Give the decoder the start of a character a read cut short, to finish with the next
        read; False (nothing held) when those bytes cannot start a character."""
        if tail:
            try:
                self._decoder.decode(tail)
            except UnicodeDecodeError:
                return False
        return True

    def _decode_error(self, err: UnicodeDecodeError) -> Exception:
        data = bytes(err.object)
        bad = data[err.start : err.end] or data[err.start : err.start + 1]
        opts = self._options
        ascii_so_far = self._ascii and data[: err.start].isascii()
        if opts.encoding == "utf-8" and not opts.encoding_given and ascii_so_far:
            window = data[max(0, err.start - SAMPLE_BYTES // 2) : err.start + SAMPLE_BYTES // 2]
            found = redetect(window)
            if found is not None:
                return Redetect(found)
        before = data[: err.start].decode(opts.encoding, "replace")
        decoded = self._taken_lines + self._buffer.count(b"\n")  # line breaks before ``data``
        line = decoded + before.count("\n") + 1
        how = "given" if opts.encoding_given else "detected from the start of the file"
        what = f"byte 0x{bad.hex()}" if len(bad) == 1 else f"bytes 0x{bad.hex()}"
        if err.reason == "unexpected end of data":
            what = f"an incomplete character at the end of the file ({what})"
        return InvalidInputError(
            f"{self._label} is not valid {opts.encoding} text at line {line}: {what} "
            f"(encoding {how}).",
            hint=_ENCODING_HINT
            if opts.encoding != _WESTERN
            else "Pass the file's encoding, e.g. encoding='utf-8' or 'latin-1' (CLI: --encoding).",
        )
