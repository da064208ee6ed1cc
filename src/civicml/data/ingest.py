"""Readers that turn CSV, Parquet, JSON Lines and data frames into Parquet, streaming.

Each reader yields Arrow record batches of bounded size; :func:`write_canonical` writes them to one
Parquet file with fixed-size row groups and no timestamps or pandas metadata, and hashes the
rows' logical content on the way (:class:`~civicml.data.content.ContentHasher`): the content
hash, not the file's bytes, is the version's identity, so the same rows with the same types are
the same version whatever the chunk size, the source format or the writer's options. Types are
canonicalised on the way: ``large_string`` and ``string_view`` become ``string``, dictionary
(categorical) columns their value type. The writer chooses its encodings for speed: dictionary
encoding only for text columns whose first row group repeats values (a category, a code), plain
encoding for numbers, dates and unique text; zstd at level 1 for the columns where it pays (a
sample of the first row group shrinks by 10 % or more; all columns of a nested table). A file
is read on one thread, profiled on the caller's, hashed and written on another
(:mod:`._pipeline`); an Arrow stream (a batch job's predictions) is produced on the caller's
thread and profiled, hashed and written on the other. Given the artifact store's ``put_stream``,
the file's bytes are stored as they are written, on a thread of their own (SHA-256, encryption,
fsync), instead of read back once the file is complete.

CSV text is decoded and its delimiter found before parsing (:mod:`civicml.data.text`: UTF-8,
UTF-8 or UTF-16 with a byte-order mark, Windows-1252 and other code pages; ``,`` ``;`` tab ``|``),
or as the caller says, and transcoded to UTF-8 as it streams; what was used is returned with the
result (:attr:`Converted.read_options`).

CSV types are inferred from the first block; a later value that does not fit (``"abc"`` in an
``int64`` column) restarts the read with that column widened (``int64`` → ``double`` →
``string``), so a file is never read whole into memory. JSON Lines are read twice: once to find the
schema of the whole file, once to convert it; a column that holds text on one line and numbers on
another is refused, naming the line.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.csv as pacsv  # type: ignore[import-untyped]
import pyarrow.json as pajson  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from civicml.core.errors import InvalidInputError
from civicml.data._pipeline import BackgroundPut, BackgroundWriter, Prefetch
from civicml.data._sample import RowSample, scanned_columns
from civicml.data.content import ContentHasher
from civicml.data.profile import Profiler
from civicml.data.schemas import ColumnProfile, SourceFormat
from civicml.data.text import (
    SAMPLE_BYTES,
    Redetect,
    TextOptions,
    TextReader,
    check_delimiter,
    check_encoding,
    check_text,
    count_byte,
    detect_delimiter,
    detect_encoding,
    undecodable,
)
from civicml.store.artifacts import Stored

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "ROW_GROUP_ROWS",
    "Converted",
    "Source",
    "detect_format",
    "open_source",
    "text_options",
    "write_canonical",
]

#: Bytes read per chunk from a file (and rows per batch ~ this divided by the row width).
DEFAULT_CHUNK_BYTES = 8 << 20
#: Rows per Parquet row group (the unit the profile's readers and the writer work in).
ROW_GROUP_ROWS = 65_536
_WRITER_OPTIONS: dict[str, Any] = {
    "version": "2.6",
    "write_statistics": True,
    "data_page_version": "1.0",
    "store_schema": True,
}
#: A text column is dictionary-encoded when its first :data:`_DICTIONARY_SAMPLE_ROWS` rows hold
#: at most this share of distinct values (measured: dictionaries on floats, integers and unique
#: text cost writer time and make the file larger; on repeated text they pay). Counting the
#: distinct values of a whole first row group of unique text took 0.18 s of the writer's time.
_DICTIONARY_MAX_DISTINCT = 0.5
_DICTIONARY_SAMPLE_ROWS = 1 << 18
_CODEC, _CODEC_LEVEL = "zstd", 1
#: Bytes Arrow's CSV parser takes at a time, each block a record batch; None: the whole chunk,
#: one batch (the profile's and the content hash's cost is mostly per batch: 1 MiB blocks, Arrow's
#: default, made them about a third dearer).
_CSV_BLOCK_BYTES: int | None = None
#: A column of a flat table is compressed when zstd makes a sample of its first row group's
#: values at least this much smaller (measured: zstd on random doubles, e.g. predicted
#: probabilities, saves 0-5 % of the bytes for twice the writer's CPU; on text, codes and
#: rounded numbers it pays).
_COMPRESS_MAX_RATIO = 0.9
_COMPRESS_SAMPLE_BYTES = 256 << 10
#: An integer, date, time or timestamp column is delta-encoded (Parquet's DELTA_BINARY_PACKED,
#: no compression) when that leaves a sample of its first values at most this much larger than
#: plain encoding with zstd does: on ids, counts, dates and timestamps it is smaller and 2-4x
#: cheaper to write (measured at 5M rows: 0.03-0.06 s against 0.10-0.13 s per column); on
#: codes that jump between a few far-apart values zstd stays.
_DELTA_MAX_RATIO = 1.1
_DELTA_SAMPLE_ROWS = 65_536
_SUFFIXES = {
    ".csv": SourceFormat.CSV,
    ".parquet": SourceFormat.PARQUET,
    ".pq": SourceFormat.PARQUET,
    ".jsonl": SourceFormat.JSONL,
    ".ndjson": SourceFormat.JSONL,
}
_FORMATS = "csv, parquet or jsonl"
_CONVERSION = re.compile(r"In CSV column #(\d+): .*CSV conversion error to (\S+?): invalid value")
_MAX_RESTARTS = 64

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Converted:
    """The result of writing a source as Parquet: its schema, rows, profile and content hash."""

    path: Path | None  # the local Parquet file; None when it was only stored
    schema: Any
    rows: int
    profiler: Profiler
    fingerprint: str | None
    read_options: dict[str, str] | None = None
    content_hash: str = ""  # the rows' logical content (:mod:`civicml.data.content`)
    stored: Stored | None = None  # the file in the artifact store, when it was stored as written
    sample: RowSample | None = None  # the rows a personal-data scan looks at, when gathered


class Source:
    """A source of rows: a file path, a seekable binary stream, a pandas DataFrame, an Arrow
    table or an Arrow stream (``pyarrow.RecordBatchReader``, read once), with its format.

    Args:
        source: What to read.
        format: ``csv``, ``parquet`` or ``jsonl``; for files, guessed from the suffix when None.
        encoding: The text encoding of a CSV source (a Python codec name such as ``cp1252``);
            None: detected.
        delimiter: The field delimiter of a CSV source; None: detected.
    """

    def __init__(
        self,
        source: Any,
        format: str | None = None,
        *,
        encoding: str | None = None,
        delimiter: str | None = None,
    ) -> None:
        self.frame: Any = None
        self.path: Path | None = None
        self.stream: BinaryIO | None = None
        self.name: str | None = None
        self.encoding = check_encoding(encoding)
        self.delimiter = check_delimiter(delimiter)
        if _is_frame(source):
            self.frame = _frame_to_table(source)
            self.format = SourceFormat.DATAFRAME
            self._check_text_options()
            return
        if isinstance(source, str | os.PathLike):
            self.path = _check_path(Path(source))
            self.name = self.path.name
            self.format = detect_format(self.path, format)
            self.size = self.path.stat().st_size
        elif hasattr(source, "read") and hasattr(source, "seek"):
            self.stream = source
            self.format = _parse_format(format, "a stream")
            self.size = source.seek(0, os.SEEK_END)
            source.seek(0)
        else:
            raise InvalidInputError(
                f"Cannot ingest a {type(source).__name__}.",
                hint="Pass a file path (CSV, Parquet or JSON Lines), a seekable binary file "
                "object with format=..., a pandas DataFrame or a pyarrow Table.",
            )
        self._check_text_options()
        if self.size == 0:
            raise InvalidInputError(
                f"{self.label} is empty (0 bytes).",
                hint="Check the file was written completely; a dataset needs at least one row.",
            )

    def _check_text_options(self) -> None:
        if self.format is SourceFormat.CSV or (self.encoding is None and self.delimiter is None):
            return
        given = "an encoding" if self.encoding is not None else "a delimiter"
        why = {
            SourceFormat.JSONL: "JSON Lines are always UTF-8 with one object per line",
            SourceFormat.PARQUET: "Parquet is a binary format that records its own types",
            SourceFormat.DATAFRAME: "a data frame is already decoded",
        }[self.format]
        raise InvalidInputError(
            f"Reading with {given} applies to CSV files only, not to {self.format.value} "
            f"sources: {why}.",
            hint=f"Leave {given.split()[1]} out, or pass format='csv' if the data is CSV.",
        )

    @property
    def label(self) -> str:
        """How messages name the source."""
        if self.path is not None:
            return f"{self.format.value.upper()} file {str(self.path)!r}"
        if self.stream is not None:
            return f"The uploaded {self.format.value.upper()} data"
        return "The data frame"

    def open(self, progress: Progress | None = None) -> _HashingReader:
        """A fresh sequential reader over the source bytes (which hashes what it reads)."""
        if self.path is not None:
            raw: Any = open(self.path, "rb")  # closed by the reader
        else:
            if self.stream is None:
                raise TypeError("a data frame source has no bytes to open")
            self.stream.seek(0)
            raw = _Unclosable(self.stream)
        return _HashingReader(raw, progress)


def detect_format(path: Path, format: str | None) -> SourceFormat:
    """The format named by ``format``, else guessed from the file suffix.

    Raises:
        InvalidInputError: The format is unknown or cannot be guessed.
    """
    if format is not None:
        return _parse_format(format, str(path))
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InvalidInputError(
            f"Cannot tell the format of {str(path)!r} from its suffix {path.suffix or '(none)'!r}.",
            hint=f"Pass format= one of {_FORMATS}, e.g. format='csv' (CLI: --format csv).",
        )
    return found


def _parse_format(format: str | None, what: str) -> SourceFormat:
    clean = (format or "").strip().lower()
    if clean in ("ndjson", "jsonlines", "json"):
        clean = "jsonl"
    if clean not in ("csv", "parquet", "jsonl"):
        given = "no format" if format is None else f"format {format!r}"
        raise InvalidInputError(
            f"Cannot ingest {what} with {given}.",
            hint=f"Use one of {_FORMATS}, e.g. format='csv' (CLI: --format csv).",
        )
    return SourceFormat(clean)


def _check_path(path: Path) -> Path:
    if path.is_symlink():
        raise InvalidInputError(
            f"{str(path)!r} is a symbolic link; datasets are ingested from regular files only.",
            hint="Ingest the file the link points to.",
        )
    if not path.exists():
        raise InvalidInputError(
            f"File {str(path)!r} does not exist.",
            hint=f"Check the path (relative paths start at {Path.cwd()}).",
        )
    if path.is_dir():
        raise InvalidInputError(
            f"{str(path)!r} is a directory; ingest one file at a time.",
            hint="Pass a CSV, Parquet or JSON Lines file inside it.",
        )
    if not path.is_file():
        raise InvalidInputError(f"{str(path)!r} is not a regular file.")
    return path


def open_source(
    source: Any,
    format: str | None = None,
    *,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> Source:
    """Check a source, its format and CSV read options; raises :class:`InvalidInputError` when
    any is unusable."""
    return Source(source, format, encoding=encoding, delimiter=delimiter)


def text_options(source: Source) -> TextOptions:
    """The encoding and delimiter a CSV source is read with: given, or detected from its first
    :data:`~civicml.data.text.SAMPLE_BYTES`.

    Raises:
        InvalidInputError: The source is binary data, not text.
    """
    with source.open() as reader:
        sample = reader.read(SAMPLE_BYTES)
    complete = source.size <= len(sample)
    encoding = source.encoding or detect_encoding(sample, source.label, complete=complete)
    decoder = codecs.getincrementaldecoder(encoding)("replace")
    try:
        text = decoder.decode(sample, final=complete).removeprefix("\ufeff")
    except UnicodeError as err:  # a codec that refuses the bytes as a whole
        raise undecodable(source.label, encoding, err) from err
    check_text(text, source.label)
    delimiter = source.delimiter or detect_delimiter(text, complete=complete)
    return TextOptions(
        encoding=encoding,
        delimiter=delimiter,
        encoding_given=source.encoding is not None,
        delimiter_given=source.delimiter is not None,
    )


# Writing ------------------------------------------------------------------------------------
def write_canonical(
    source: Source,
    dest: Path | None,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    progress: bool | None = None,
    known_profiles: Mapping[str, ColumnProfile] | None = None,
    store: Callable[[BinaryIO], Stored] | None = None,
    sample_rows: int | None = None,
) -> Converted:
    """Write ``source`` to ``dest`` as Parquet, profiling and hashing its content on the way.

    Args:
        source: What to read.
        dest: The Parquet file to write (replaced); None writes none, only ``store`` gets
            the bytes (what no check reads later need not be written twice).
        chunk_bytes: Bytes read per chunk; bounds memory together with :data:`ROW_GROUP_ROWS`.
        progress: Show a progress bar on stderr; None shows one when stderr is a terminal.
        known_profiles: Column profiles taken as they are instead of computed
            (:class:`~civicml.data.profile.Profiler`'s ``known``).
        store: What stores the file's bytes (``ArtifactStore.put_stream``), called on a thread
            of its own with a stream of the bytes as they are written: the file is stored by
            the time this returns (:attr:`Converted.stored`), and the store need not read it
            again. Nothing is kept when the ingest fails.
        sample_rows: Gather the rows a personal-data scan with this limit looks at, as they are
            written (:attr:`Converted.sample`); None gathers none.

    Raises:
        InvalidInputError: The source cannot be read, has no rows or no columns, or has a
            column name twice.
    """
    if dest is None and store is None:
        raise ValueError("write_canonical needs a destination file or a store")
    show = sys.stderr.isatty() if progress is None else progress
    total = getattr(source.frame, "num_rows", 0) if source.frame is not None else source.size
    options = text_options(source) if source.format is SourceFormat.CSV else None
    with _ProgressBar(show, total, source) as advance:
        overrides: dict[str, Any] = {}
        for _ in range(_MAX_RESTARTS):
            try:
                return _write(
                    source,
                    dest,
                    chunk_bytes,
                    overrides,
                    advance,
                    options,
                    known_profiles,
                    store,
                    sample_rows,
                )
            except _Widen as widen:
                overrides[widen.column] = widen.to
                advance(-1)  # restart the bar
            except Redetect as again:  # ASCII so far, then another encoding: read it again
                if options is None:  # pragma: no cover - only CSV reads text
                    raise
                options = replace(options, encoding=again.encoding)
                advance(-1)
        raise InvalidInputError(  # pragma: no cover - needs > 64 widenings
            f"{source.label} could not be typed: its column types kept changing while reading.",
            hint="Convert it to Parquet with explicit column types and ingest that.",
        )


def _write(
    source: Source,
    dest: Path | None,
    chunk_bytes: int,
    overrides: dict[str, Any],
    advance: Progress,
    options: TextOptions | None,
    known_profiles: Mapping[str, ColumnProfile] | None = None,
    store: Callable[[BinaryIO], Stored] | None = None,
    sample_rows: int | None = None,
) -> Converted:
    reader = None if source.format is SourceFormat.DATAFRAME else source.open(advance)
    try:
        if isinstance(source.frame, pa.RecordBatchReader):  # an Arrow stream: read once
            batches, schema = iter(source.frame), source.frame.schema
        elif reader is None:
            batches = iter(source.frame.to_batches(max_chunksize=max(1, chunk_bytes // 64)))
            schema = source.frame.schema
        elif source.format is SourceFormat.CSV and options is not None:
            schema, batches = _csv(source, reader, chunk_bytes, overrides, options)
        elif source.format is SourceFormat.PARQUET:
            schema, batches = _parquet(source, reader, chunk_bytes, advance)
        else:
            schema, batches = _jsonl(source, reader, chunk_bytes)
        canonical = _canonical_schema(schema, source)
        profiler = Profiler(canonical, known_profiles)
        sample = (
            None
            if sample_rows is None
            else RowSample(canonical, scanned_columns(canonical), sample_rows)
        )
        observe = _observer(profiler, sample)
        hasher = ContentHasher(canonical)
        rows = 0
        with contextlib.ExitStack() as stages:
            # Writing (and hashing the content) on a thread of its own, reading on another.
            writer = stages.enter_context(_ParquetSink(dest, canonical, hasher, store))
            stream = isinstance(source.frame, pa.RecordBatchReader)
            # A stream's batches are computed on this thread (a batch job predicts them): the
            # writer's thread profiles them too, in the same batches and order.
            work = _profile_or_write(observe, writer) if stream else writer.write
            sink = stages.enter_context(BackgroundWriter(work))
            if reader is not None:  # our own reader; a caller's stream stays on its thread
                batches = stages.enter_context(Prefetch(batches, max(chunk_bytes, 1 << 20)))
            profile = sink.submit if stream else observe
            pending: list[Any] = []
            pending_rows = 0
            for raw in batches:
                batch = _canonical_batch(raw, canonical)
                if not batch.num_rows:
                    continue
                profile(batch)
                rows += batch.num_rows
                pending.append(batch)
                pending_rows += batch.num_rows
                while pending_rows >= ROW_GROUP_ROWS:
                    table = pa.Table.from_batches(pending, canonical)
                    sink.submit(table.slice(0, ROW_GROUP_ROWS))
                    rest = table.slice(ROW_GROUP_ROWS)
                    pending, pending_rows = rest.combine_chunks().to_batches(), rest.num_rows
                if source.format is SourceFormat.DATAFRAME:
                    advance(batch.num_rows)
            if pending_rows:
                sink.submit(pa.Table.from_batches(pending, canonical))
            sink.finish()
        if rows == 0:
            raise InvalidInputError(
                f"{source.label} has no rows.",
                hint="A dataset version needs at least one row of data below the header.",
            )
        fingerprint = None if reader is None else reader.finish()
        read_options = None if options is None else options.record()
        return Converted(
            dest,
            canonical,
            rows,
            profiler,
            fingerprint,
            read_options,
            hasher.hexdigest(),
            getattr(writer, "stored", None),
            sample,
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
        raise _read_error(source, err) from err
    finally:
        if reader is not None:
            reader.close()


class _ParquetSink:
    """The Parquet writer of one ingest, opened at the first table (on the writer's thread), when
    the encodings can be chosen from the data: dictionary encoding for the text columns whose
    first rows repeat values, delta encoding for the integer-like columns it suits, plain
    encoding for every other column; zstd for the columns it shrinks (:func:`_compression`).
    Each table's content is hashed here too (the profile keeps the caller's thread busy
    enough); the tables come in order and the hash does not depend on where they were cut.
    With ``store``, the file's bytes also go to the artifact store as they are written
    (:class:`BackgroundPut`), which stores them by the time the sink is closed
    (:attr:`stored`)."""

    def __init__(
        self,
        dest: Path | None,
        schema: Any,
        hasher: ContentHasher,
        store: Callable[[BinaryIO], Stored] | None = None,
    ) -> None:
        self._dest = dest
        self._schema = schema
        self._hasher = hasher
        self._store = store
        self._writer: Any = None
        self._file: _TeeFile | None = None
        self._put: BackgroundPut | None = None
        self.stored: Stored | None = None

    def __enter__(self) -> _ParquetSink:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is None:
            return
        try:
            try:
                if self._writer is not None:
                    self._writer.close()
            finally:
                self._file.close()
            if self._put is not None and exc[0] is None:
                self.stored = self._put.finish()
        finally:
            if self._put is not None:
                self._put.__exit__()  # after an error: the store keeps nothing

    def write(self, table: Any) -> None:
        if self._writer is None:
            dictionary = _dictionary_columns(table)
            if self._store is not None:
                self._put = BackgroundPut(self._store).__enter__()
            raw = None if self._dest is None else open(self._dest, "wb")
            self._file = _TeeFile(raw, self._put)
            self._writer = pq.ParquetWriter(
                self._file,
                self._schema,
                use_dictionary=dictionary,
                **_compression(table, dictionary),
                **_WRITER_OPTIONS,
            )
        self._hasher.update(table)
        self._writer.write_table(table, ROW_GROUP_ROWS)


class _TeeFile(io.RawIOBase):
    """A file written sequentially (by the Parquet writer) whose bytes also go to ``put``
    (``raw`` None: only to ``put``)."""

    def __init__(self, raw: BinaryIO | None, put: BackgroundPut | None) -> None:
        self._raw = raw
        self._put = put
        self._written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._raw is not None:
            self._raw.write(data)
        if self._put is not None:
            self._put.write(data)
        size = memoryview(data).nbytes
        self._written += size
        return size

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        if self._raw is not None and not self._raw.closed:
            self._raw.flush()

    def close(self) -> None:
        try:
            super().close()  # flushes
        finally:
            if self._raw is not None:
                self._raw.close()


def _observer(profiler: Profiler, sample: RowSample | None) -> Callable[[Any], None]:
    """What each record batch goes through besides the writer: the profile, and the sample of
    the personal-data scan when one is gathered."""
    if sample is None:
        return profiler.update

    def observe(batch: Any) -> None:
        profiler.update(batch)
        sample.update(batch)

    return observe


def _profile_or_write(
    observe: Callable[[Any], None], writer: _ParquetSink
) -> Callable[[Any], None]:
    """What the writer's thread does with an item of a stream: profile (and sample) a record
    batch, write a table (a row group)."""

    def work(item: Any) -> None:
        if isinstance(item, pa.RecordBatch):
            observe(item)
        else:
            writer.write(item)

    return work


def _dictionary_columns(table: Any) -> list[str]:
    """The text columns of ``table`` worth dictionary encoding (few distinct values)."""
    chosen = []
    for f, column in zip(table.schema, table.columns, strict=True):
        if not (pa.types.is_string(f.type) or pa.types.is_binary(f.type)) or not len(column):
            continue
        head = column.slice(0, _DICTIONARY_SAMPLE_ROWS)
        distinct = pc.count_distinct(head, mode="all").as_py()
        if distinct <= _DICTIONARY_MAX_DISTINCT * len(head):
            chosen.append(f.name)
    return chosen


def _compression(table: Any, dictionary: list[str]) -> dict[str, Any]:
    """The writer's ``compression``, ``compression_level`` and ``column_encoding``: delta
    encoding without compression for the integer-like columns it suits (:func:`_delta_pays`),
    zstd for the dictionary columns and for each other column whose first values zstd shrinks
    by 10 % or more, none for the others (random doubles); zstd for every column of a table
    with nested columns (one leaf each would need naming)."""
    if any(pa.types.is_nested(t) for t in table.schema.types):
        return {"compression": _CODEC, "compression_level": _CODEC_LEVEL}
    codec = pa.Codec(_CODEC, compression_level=_CODEC_LEVEL)
    chosen, delta = {}, []
    for f, column in zip(table.schema, table.columns, strict=True):
        if _delta_pays(f, column):
            delta.append(f.name)
        elif f.name in dictionary or _compressible(codec, column):
            chosen[f.name] = _CODEC
    options: dict[str, Any] = {
        "compression": {n: chosen.get(n, "none") for n in table.schema.names},
        "compression_level": dict.fromkeys(chosen, _CODEC_LEVEL),
    }
    if delta:
        options["column_encoding"] = dict.fromkeys(delta, "DELTA_BINARY_PACKED")
    return options


def _delta_pays(field: Any, column: Any) -> bool:
    """Whether an integer, date, time or timestamp column's first values take at most
    :data:`_DELTA_MAX_RATIO` times the bytes delta-encoded (uncompressed) that they take
    plain-encoded with zstd, each written as a small Parquet file of its own."""
    t = field.type
    if not (
        pa.types.is_signed_integer(t)
        or t in (pa.uint8(), pa.uint16(), pa.uint32())
        or pa.types.is_date32(t)
        or pa.types.is_timestamp(t)
        or pa.types.is_time(t)
    ):
        return False
    sample = pa.table({"v": column.slice(0, _DELTA_SAMPLE_ROWS)})
    if not sample.num_rows or sample.column(0).null_count == sample.num_rows:
        return False

    def size(**options: Any) -> int:
        out = pa.BufferOutputStream()
        pq.write_table(sample, out, use_dictionary=False, **options, **_WRITER_OPTIONS)
        return int(out.getvalue().size)

    delta = size(column_encoding="DELTA_BINARY_PACKED", compression="none")
    return delta <= _DELTA_MAX_RATIO * size(compression=_CODEC, compression_level=_CODEC_LEVEL)


def _compressible(codec: Any, column: Any) -> bool:
    """Whether zstd shrinks a sample of the column's value bytes (the bytes Parquet stores:
    the values buffer, or a text column's characters) by :data:`_COMPRESS_MAX_RATIO`."""
    chunk = next((c for c in column.chunks if len(c)), None)
    if chunk is None:
        return True
    buffers = chunk.buffers()
    data = buffers[-1] if len(buffers) > 1 else None
    if data is None or data.size == 0:  # no values stored (all null, empty text)
        return True
    sample = data.slice(0, min(data.size, _COMPRESS_SAMPLE_BYTES))
    return bool(codec.compress(sample).size <= _COMPRESS_MAX_RATIO * sample.size)


# Readers ------------------------------------------------------------------------------------
def _csv(
    source: Source,
    raw: _HashingReader,
    chunk_bytes: int,
    overrides: dict[str, Any],
    options: TextOptions,
) -> tuple[Any, Iterator[Any]]:
    """CSV in blocks of whole lines that we cut ourselves: pyarrow's own streaming reader reads
    ahead without bound (the whole file, when parsing is slower than the disk). The blocks are
    UTF-8, transcoded from the source's encoding on the way (:class:`TextReader`)."""
    reader = TextReader(raw, options, source.label, block=min(1 << 20, max(4096, chunk_bytes // 4)))
    header = _balanced(reader, reader.readline())
    try:
        names = pacsv.read_csv(
            io.BytesIO(header), parse_options=pacsv.ParseOptions(delimiter=options.delimiter)
        ).schema.names
    except pa.ArrowInvalid as err:
        raise _csv_error(source, err, None, options) from err
    chunks = _csv_chunks(reader, chunk_bytes)
    first = next(chunks, None)
    types = dict(overrides)
    if first is None:
        return pa.schema([pa.field(n, types.get(n, pa.string())) for n in names]), iter(())
    table = _parse_csv(source, first, names, types, options)
    _no_bytes(source, table.schema)
    types = {f.name: f.type for f in table.schema}

    def batches() -> Iterator[Any]:
        yield from table.to_batches()
        for chunk in chunks:
            yield from _parse_csv(source, chunk, names, types, options).to_batches()

    return table.schema, batches()


def _no_bytes(source: Source, schema: Any) -> None:
    """Text never silently becomes bytes: a CSV column the parser could only read as binary is
    refused (the transcoder hands it valid UTF-8, so this is a guard, not a path)."""
    for f in schema:
        if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type):
            raise InvalidInputError(  # pragma: no cover - see the docstring
                f"{source.label}: column {f.name!r} could not be read as text.",
                hint="Pass the file's encoding, e.g. encoding='cp1252' (CLI: --encoding cp1252).",
            )


def _csv_chunks(reader: TextReader, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Blocks of whole records (a quoted field may span lines) with their first line number."""
    while True:
        line_no = reader.line
        block = reader.read_lines(chunk_bytes)
        if not block:
            return
        yield line_no, _balanced(reader, block)


def _balanced(reader: TextReader, block: bytes) -> bytes:
    """Extend ``block`` line by line until its double quotes pair up (RFC 4180 quoting)."""
    while b'"' in block and count_byte(block, 0x22) % 2:  # ``in``: a scan that stops at the first
        more = reader.readline()
        if not more:
            break
        block += more
    return block


def _parse_csv(
    source: Source,
    chunk: tuple[int, bytes],
    names: list[str],
    types: dict[str, Any],
    options: TextOptions,
) -> Any:
    first_line, data = chunk

    def parse(threads: bool) -> Any:
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(
                column_names=names,
                use_threads=threads,
                block_size=_CSV_BLOCK_BYTES or max(len(data), 1),
            ),
            parse_options=pacsv.ParseOptions(delimiter=options.delimiter),
            # The transcoder hands over valid UTF-8 only (checked or re-encoded): not again.
            convert_options=pacsv.ConvertOptions(
                column_types=types, strings_can_be_null=True, check_utf8=False
            ),
        )

    try:
        return parse(True)
    except pa.ArrowInvalid as err:
        match = _CONVERSION.search(str(err))
        if match:
            column = names[int(match.group(1))]
            raise _Widen(column, _wider(match.group(2), str(err))) from err
        try:  # only the single-threaded parser knows row numbers
            parse(False)
        except pa.ArrowInvalid as again:
            raise _csv_error(source, again, first_line, options) from err
        raise _csv_error(source, err, first_line, options) from err


def _wider(failed: str, message: str) -> Any:
    value = message.rsplit("invalid value ", 1)[-1].strip("'")
    if failed == "null":
        for kind, parse in ((pa.int64(), int), (pa.float64(), float)):
            try:
                parse(value)
            except ValueError:
                continue
            return kind
        return pa.string()
    if failed.startswith(("int", "uint")):
        try:
            float(value)
        except ValueError:
            return pa.string()
        return pa.float64()
    return pa.string()


def _parquet(
    source: Source, reader: _HashingReader, chunk_bytes: int, advance: Progress
) -> tuple[Any, Iterator[Any]]:
    try:
        handle = pq.ParquetFile(reader.raw)
    except (pa.ArrowInvalid, OSError) as err:
        raise InvalidInputError(
            f"{source.label} is not a readable Parquet file: {_first_line(err)}.",
            hint="Check the file is Parquet (not CSV or JSON renamed), or pass the right format.",
        ) from err
    schema = handle.schema_arrow
    width = max(1, handle.metadata.serialized_size // max(1, handle.metadata.num_rows or 1))
    batch_rows = max(1, min(ROW_GROUP_ROWS, chunk_bytes // max(64, width)))

    def batches() -> Iterator[Any]:
        total = max(1, handle.metadata.num_rows)
        for batch in handle.iter_batches(batch_size=batch_rows, use_threads=True):
            advance(int(source.size * batch.num_rows / total))
            yield batch
        reader.hash_rest()

    return schema, batches()


def _jsonl(source: Source, reader: _HashingReader, chunk_bytes: int) -> tuple[Any, Iterator[Any]]:
    fields: dict[str, Any] = {}
    with source.open() as first_pass:
        for first_line, chunk in _line_chunks(first_pass, chunk_bytes):
            table = _read_json_chunk(source, chunk, first_line, None)
            for f in table.schema:
                known = fields.get(f.name)
                merged = f.type if known is None else _merge_types(known, f.type)
                if merged is None:
                    line = _find_json_conflict(chunk, first_line, f.name, known)
                    raise _mixed(source, f.name, known, f.type, line)
                fields[f.name] = merged
    schema = pa.schema([pa.field(n, t) for n, t in fields.items()])

    def batches() -> Iterator[Any]:
        reader.raw.seek(0)  # a caller's stream was read to its end by the first pass
        for first_line, chunk in _line_chunks(reader, chunk_bytes):
            yield from _read_json_chunk(source, chunk, first_line, schema).to_batches()

    return schema, batches()


def _line_chunks(reader: _HashingReader, chunk_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Blocks of whole lines of about ``chunk_bytes``, with the 1-based number of their first
    line."""
    line_no = 1
    while block := reader.read(chunk_bytes):
        if not block.endswith(b"\n"):
            block += reader.readline()
        yield line_no, block
        line_no += block.count(b"\n")


def _read_json_chunk(source: Source, chunk: bytes, first_line: int, schema: Any) -> Any:
    options = pajson.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="infer" if schema is None else "error"
    )
    try:
        return pajson.read_json(io.BytesIO(chunk), parse_options=options)
    except pa.ArrowInvalid as err:
        line, problem = _json_problem(chunk, first_line)
        if problem is None:
            raise InvalidInputError(
                f"{source.label} could not be read near line {first_line}: {_first_line(err)}.",
                hint='Each line must be one JSON object, e.g. {"age": 41, "region": "north"}.',
            ) from err
        raise InvalidInputError(
            f"{source.label} line {line}: {problem}.",
            hint="Each line must be one JSON object, and a column must hold values of one type "
            '(e.g. always a number or always text): {"age": 41, "region": "north"}.',
        ) from err


def _json_problem(chunk: bytes, first_line: int) -> tuple[int, str | None]:
    """The first line of ``chunk`` that is not a JSON object, or whose column changes type."""
    kinds: dict[str, str] = {}
    for offset, raw in enumerate(chunk.split(b"\n")):
        if not raw.strip():
            continue
        line = first_line + offset
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as err:
            return line, f"not valid JSON ({err.msg} at column {err.colno})"
        except UnicodeDecodeError:
            return line, "not UTF-8 text"
        if not isinstance(value, dict):
            return line, f"a JSON {type(value).__name__}, not an object"
        for key, item in value.items():
            kind = _json_kind(item)
            if kind == "null":
                continue
            known = kinds.setdefault(key, kind)
            if known != kind and {known, kind} != {"integers", "numbers"}:
                return line, f"column {key!r} holds {kind} here but {known} on earlier lines"
    return first_line, None


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "booleans"
    if isinstance(value, int):
        return "integers"
    if isinstance(value, float):
        return "numbers"
    if isinstance(value, str):
        return "text"
    return "lists" if isinstance(value, list) else "objects"


def _find_json_conflict(chunk: bytes, first_line: int, column: str, known: Any) -> int:
    for offset, raw in enumerate(chunk.split(b"\n")):
        if raw.strip():
            value = json.loads(raw).get(column)
            if value is not None and _merge_types(known, pa.array([value]).type) is None:
                return first_line + offset
    return first_line  # pragma: no cover - the chunk's schema came from these lines


def _merge_types(a: Any, b: Any) -> Any:
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    numeric = (pa.types.is_integer(a) or pa.types.is_floating(a)) and (
        pa.types.is_integer(b) or pa.types.is_floating(b)
    )
    return pa.float64() if numeric else None


def _mixed(source: Source, column: str, before: Any, after: Any, line: int) -> InvalidInputError:
    return InvalidInputError(
        f"{source.label} line {line}: column {column!r} holds {_type_words(after)} here but "
        f"{_type_words(before)} on earlier lines.",
        hint="A column must hold values of one type; fix the line, or quote the values so the "
        "column is text throughout.",
    )


def _type_words(t: Any) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "text"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "numbers"
    if pa.types.is_boolean(t):
        return "booleans"
    return f"{t} values"


# Canonical form -----------------------------------------------------------------------------
def _canonical_type(t: Any) -> Any:
    if pa.types.is_dictionary(t):
        return _canonical_type(t.value_type)
    if pa.types.is_large_string(t) or _is_view(t, "is_string_view"):
        return pa.string()
    if pa.types.is_large_binary(t) or _is_view(t, "is_binary_view"):
        return pa.binary()
    return t


def _is_view(t: Any, check: str) -> bool:
    """View types exist from pyarrow 16; civicml supports 15."""
    test = getattr(pa.types, check, None)
    return bool(test is not None and test(t))


def _canonical_schema(schema: Any, source: Source) -> Any:
    names = list(schema.names)
    if not names:
        raise InvalidInputError(f"{source.label} has no columns.")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInputError(
            f"{source.label} has the column name {dupes[0]!r} more than once.",
            hint="Column names must be unique; rename the duplicates.",
        )
    return pa.schema([pa.field(f.name, _canonical_type(f.type)) for f in schema])


def _canonical_batch(batch: Any, schema: Any) -> Any:
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    if batch.schema.names != schema.names:
        batch = batch.select(schema.names)
    return pa.RecordBatch.from_arrays(
        [c.cast(f.type) for c, f in zip(batch.columns, schema, strict=True)], schema=schema
    )


# Data frames --------------------------------------------------------------------------------
def _is_frame(source: Any) -> bool:
    if isinstance(source, pa.Table | pa.RecordBatch | pa.RecordBatchReader):
        return True
    module = type(source).__module__
    return module.startswith("pandas") and type(source).__name__ == "DataFrame"


def _frame_to_table(source: Any) -> Any:
    if isinstance(source, pa.RecordBatch):
        return pa.Table.from_batches([source])
    if isinstance(source, pa.Table | pa.RecordBatchReader):
        return source
    frame = source
    if any(not isinstance(c, str) for c in frame.columns):
        frame = frame.rename(columns=str)
    if frame.index.name is not None or any(n is not None for n in frame.index.names):
        frame = frame.reset_index()  # a named index is data: keep it as columns
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise InvalidInputError(
            f"The data frame cannot be stored: {_first_line(err)}.",
            hint="A column must hold values of one type; convert mixed object columns, e.g. "
            "df['col'] = df['col'].astype(str).",
        ) from err


# Errors -------------------------------------------------------------------------------------
class _Widen(Exception):
    def __init__(self, column: str, to: Any) -> None:
        super().__init__(column)
        self.column = column
        self.to = to


def _csv_error(
    source: Source, err: Exception, first_line: int | None, options: TextOptions
) -> InvalidInputError:
    text = _first_line(err).removeprefix("CSV parse error: ")
    if text == "Empty CSV file":
        return InvalidInputError(f"{source.label} is empty.", hint="It needs a header and rows.")
    found = re.match(r"Row #(\d+): (.*)", text)
    where = ""
    if found and first_line is not None:
        where = f" at line {first_line + int(found.group(1)) - 1}"
        text = found.group(2)
    name = options.delimiter_name
    how = "given" if options.delimiter_given else "detected"
    return InvalidInputError(
        f"{source.label} is not readable CSV{where}: {text} (delimiter: {name}, {how}).",
        hint=f"Every line needs the same number of {name}-separated fields as the header; quote "
        'fields that contain the delimiter or line breaks ("a, b"). If the delimiter is wrong, '
        "pass delimiter=... (CLI: --delimiter ';').",
    )


def _read_error(source: Source, err: Exception) -> InvalidInputError:
    return InvalidInputError(
        f"{source.label} could not be converted: {_first_line(err)}.",
        hint="Check that each column holds values of one type.",
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0].rstrip(".") if text else type(err).__name__


# Byte streams -------------------------------------------------------------------------------
class _Unclosable(io.RawIOBase):
    """A view of a caller's stream that leaves it open when closed."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)

    def readinto(self, buffer: Any) -> int:
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        return self._inner.readline(-1 if size is None else size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()


class _HashingReader(io.RawIOBase):
    """Reads a source sequentially, hashing (and counting, for the progress bar) every byte."""

    def __init__(self, raw: Any, progress: Progress | None) -> None:
        self.raw = raw
        self._sha = hashlib.sha256()
        self._progress = progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        self._seen(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self.raw.readline(-1 if size is None else size)
        self._seen(data)
        return data

    def _seen(self, data: bytes) -> None:
        self._sha.update(data)
        if self._progress is not None and data:
            self._progress(len(data))

    def hash_rest(self) -> None:
        """Hash the whole source from the start (for readers that seek, such as Parquet)."""
        self._sha = hashlib.sha256()
        self.raw.seek(0)
        while block := self.raw.read(1 << 20):
            self._sha.update(block)

    def finish(self) -> str:
        """Hash any bytes the parser left unread; returns the SHA-256 of the whole source."""
        while block := self.raw.read(1 << 20):
            self._sha.update(block)
        return self._sha.hexdigest()

    def close(self) -> None:
        self.raw.close()
        super().close()


# Progress -----------------------------------------------------------------------------------
class _ProgressBar:
    """A rich progress bar of bytes (rows for data frames) on stderr; no-op when hidden."""

    def __init__(self, show: bool, total: int, source: Source) -> None:
        self._show = show
        self._total = total
        self._source = source
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if not self._show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        frame = self._source.format is SourceFormat.DATAFRAME
        counter = MofNCompleteColumn() if frame else DownloadColumn()
        columns = [TextColumn("{task.description}"), BarColumn(), counter]
        if not frame:
            columns.append(TransferSpeedColumn())
        self._bar = Progress(
            *columns, TimeRemainingColumn(), console=Console(stderr=True), transient=True
        )
        self._bar.start()
        self._task = self._bar.add_task(
            f"Ingesting {self._source.name or self._source.format.value}", total=self._total
        )

        def advance(n: int) -> None:
            if n < 0:
                self._bar.reset(self._task)
            else:
                self._bar.advance(self._task, n)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
