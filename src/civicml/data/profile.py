"""Column profiles computed incrementally, one record batch at a time, in bounded memory.

Counts, missing values, min, max and mean are exact; the standard deviation is exact too
(Chan et al.'s pairwise update of count, mean and M2). Quantiles come from a uniform reservoir
sample (Li's Algorithm L, which draws the gaps between taken values, vectorised in blocks, with a
random generator per column seeded by its name, so a column's sample depends on its name and
values only: not on the other columns or on how the rows were cut into batches): exact while a
column has at most :data:`RESERVOIR_SIZE` values, an estimate with a rank error of about
``1/sqrt(RESERVOIR_SIZE)`` (under 1 %) beyond.
Categorical value counts are exact up to :data:`MAX_TRACKED_VALUES` distinct values; past that
the rarest are dropped (their counts become lower bounds, as in the Misra-Gries summary) and the
distinct count is a k-minimum-values estimate over 64-bit hashes of the values.

Categorical values stay in Arrow and numpy: the counts are an Arrow array of values and a numpy
array of counts merged per batch by ``pyarrow.compute`` (no Python object per value), and the
hashes are computed on the Arrow buffers (:func:`_hash_strings`), for each batch's distinct values
only, and only from the first pruning on (until then the tracked values are every distinct value,
and they seed the sketch then). A pruning sorts only the tracked values and those of the batch's
new values that can make the cut; the top values leave Arrow only as candidates for the top.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from civicml.data.schemas import ColumnKind, ColumnProfile, TopValue

__all__ = ["MAX_TRACKED_VALUES", "RESERVOIR_SIZE", "Profiler", "column_kind"]

RESERVOIR_SIZE = 20_000
MAX_TRACKED_VALUES = 50_000
KMV_SIZE = 4096
TOP_VALUES = 10
QUANTILES = {"p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95}
_SEED = 20_240_601
_HASH_SEED = 0x2545F4914F6CDD1D
#: Value bytes hashed at a time: the few uint64 temporaries (8 bytes per value byte) stay within a
#: core's L2 cache (with 64 KiB pieces the hash took 3-4x as long on a 2 MiB L2).
_HASH_PIECE_BYTES = 1 << 14


def column_kind(arrow_type: Any) -> ColumnKind:
    """How a column of ``arrow_type`` is profiled."""
    t = pa.types
    if t.is_boolean(arrow_type):
        return ColumnKind.BOOLEAN
    if t.is_integer(arrow_type) or t.is_floating(arrow_type) or t.is_decimal(arrow_type):
        return ColumnKind.NUMERIC
    if t.is_timestamp(arrow_type) or t.is_date(arrow_type):
        return ColumnKind.DATETIME
    if t.is_string(arrow_type) or t.is_large_string(arrow_type) or t.is_dictionary(arrow_type):
        return ColumnKind.CATEGORICAL
    return ColumnKind.OTHER


@dataclass(slots=True)
class _Column:
    name: str
    type: Any
    kind: ColumnKind
    count: int = 0
    missing: int = 0
    min: Any = None
    max: Any = None
    mean: float = 0.0
    m2: float = 0.0
    seen: int = 0  # values offered to the reservoir
    reservoir: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0))
    true_count: int = 0
    values: Any = None  # the tracked categorical values (Arrow), in order of first appearance
    counts: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    pruned: bool = False
    kmv: np.ndarray[Any, Any] = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    skips: _Skips | None = None  # where the reservoir takes values, once it is full


class Profiler:
    """Accumulates the profile of a table batch by batch.

    Args:
        schema: The Arrow schema every batch has.
        known: Profiles taken as they are instead of computed, by column name (those of the
            schema's type and kind): for columns whose values are another version's byte for
            byte (a batch job's input columns), that version's profile. The other columns get
            the profile they get without ``known`` (each column samples with its own
            generator).

    Example:
        >>> import pyarrow as pa
        >>> p = Profiler(pa.schema([("x", pa.int64())]))
        >>> p.update(pa.record_batch([pa.array([1, 2, None])], names=["x"]))
        >>> p.result()[0].mean
        1.5
    """

    def __init__(self, schema: Any, known: Mapping[str, ColumnProfile] | None = None) -> None:
        self._columns = [_Column(f.name, f.type, column_kind(f.type)) for f in schema]
        self.rows = 0
        known = known or {}
        #: The reused profiles, by column position.
        self._known = {
            i: known[col.name]
            for i, col in enumerate(self._columns)
            if col.name in known
            and known[col.name].type == str(col.type)
            and known[col.name].kind is col.kind
        }

    def update(self, batch: Any) -> None:
        """Add one record batch (with the profiler's schema)."""
        self.rows += batch.num_rows
        for i, (col, array) in enumerate(zip(self._columns, batch.columns, strict=True)):
            if i in self._known:
                continue
            if col.kind is ColumnKind.NUMERIC:
                self._numeric(col, array)
            elif col.kind is ColumnKind.BOOLEAN:
                valid = array.drop_null()
                col.count += len(valid)
                col.missing += array.null_count
                col.true_count += int(pc.sum(valid).as_py() or 0)
            elif col.kind is ColumnKind.DATETIME:
                self._extremes(col, array.drop_null(), array.null_count)
            elif col.kind is ColumnKind.CATEGORICAL:
                self._categorical(col, array)
            else:
                col.missing += array.null_count
                col.count += len(array) - array.null_count

    def result(self) -> list[ColumnProfile]:
        """The profile of every batch added so far, in column order.

        Raises:
            ValueError: A reused profile counts another number of rows than were added.
        """
        for known in self._known.values():
            if known.count + known.missing != self.rows:
                raise ValueError(
                    f"The reused profile of column {known.name!r} covers "
                    f"{known.count + known.missing} rows, not the {self.rows} added."
                )
        return [
            self._known[i] if i in self._known else self._profile(col)
            for i, col in enumerate(self._columns)
        ]

    # Kinds --------------------------------------------------------------------------------
    def _extremes(self, col: _Column, valid: Any, missing: int) -> None:
        col.count += len(valid)
        col.missing += missing
        if len(valid):
            low, high = pc.min_max(valid).values()
            lo, hi = low.as_py(), high.as_py()
            col.min = lo if col.min is None else min(col.min, lo)
            col.max = hi if col.max is None else max(col.max, hi)

    def _numeric(self, col: _Column, array: Any) -> None:
        if pa.types.is_decimal(array.type):
            array = array.cast(pa.float64())
        missing = array.null_count
        valid = array.drop_null()
        if pa.types.is_floating(array.type):
            nan = pc.is_nan(valid)
            missing += int(pc.sum(nan).as_py() or 0)
            valid = valid.filter(pc.invert(nan))
        self._extremes(col, valid, missing)
        n = len(valid)
        if not n:
            return
        values = valid.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        with np.errstate(invalid="ignore", over="ignore"):  # infinities make mean/std None
            mean = float(values.mean())
            m2 = float(((values - mean) ** 2).sum())
            total = col.seen + n
            delta = mean - col.mean
            col.mean += delta * n / total
            col.m2 += m2 + delta * delta * col.seen * n / total
        self._sample(col, values)

    def _sample(self, col: _Column, values: np.ndarray[Any, Any]) -> None:
        """A uniform sample of the column's values: the first RESERVOIR_SIZE fill the
        reservoir, then each later value replaces a random slot with probability
        RESERVOIR_SIZE / (its 0-based place + 1), drawn by skips (:class:`_Skips`)."""
        base = col.seen
        room = RESERVOIR_SIZE - len(col.reservoir)
        if room > 0:
            col.reservoir = np.concatenate([col.reservoir, values[:room]])
        col.seen += len(values)
        if col.seen <= RESERVOIR_SIZE:
            return
        if col.skips is None:
            col.skips = _Skips(_generator(col.name), RESERVOIR_SIZE)
        places, slots = col.skips.until(col.seen)
        if len(places):  # in order: a slot taken twice keeps the later value
            col.reservoir[slots] = values[places - base]

    def _categorical(self, col: _Column, array: Any) -> None:
        if pa.types.is_dictionary(array.type):
            array = array.dictionary_decode()
        col.missing += array.null_count
        valid = array.drop_null()
        col.count += len(valid)
        if not len(valid):
            return
        counted = pc.value_counts(valid)
        values = counted.field("values")
        counts = counted.field("counts").to_numpy().astype(np.int64)
        if col.values is None:
            col.values, col.counts = values, counts
            fresh = np.zeros(0, dtype=bool)
        else:
            # Each batch value's place among the tracked values (the smaller hash table).
            where = pc.fill_null(pc.index_in(values, value_set=col.values), -1).to_numpy()
            hit = where >= 0
            col.counts[where[hit]] += counts[hit]  # distinct values: no index twice
            fresh = ~hit
        new = int(fresh.sum())
        if col.pruned and new:  # the k smallest hashes of every distinct value: a tracked
            # value was seen before, so its hash is in the sketch (or above its k-th) already
            _hash_sketch(col, values if new == len(values) else values.filter(pa.array(fresh)))
        if len(col.counts) + new > MAX_TRACKED_VALUES:
            self._prune(col, values, counts, fresh)
        elif new:  # new values, in the order the batch first shows them
            col.values = pa.concat_arrays([col.values, values.filter(pa.array(fresh))])
            col.counts = np.concatenate([col.counts, counts[fresh]])

    @staticmethod
    def _prune(col: _Column, values: Any, counts: Any, fresh: Any) -> None:
        """Keep the :data:`MAX_TRACKED_VALUES` // 2 most frequent of the tracked values and the
        batch's ``fresh`` ones, ties by first seen (tracked before fresh). A fresh value whose
        count is at most that of the tracked value in the last kept place cannot make the cut
        (that many tracked values rank before it), so it is dropped before the sort."""
        keep = MAX_TRACKED_VALUES // 2
        if not col.pruned:  # every distinct value so far is tracked or fresh: seed the sketch
            _hash_sketch(col, col.values)
            if fresh.any():
                _hash_sketch(col, values.filter(pa.array(fresh)))
        if len(col.counts) >= keep and fresh.any():
            last = np.partition(col.counts, len(col.counts) - keep)[len(col.counts) - keep]
            fresh = fresh & (counts > last)
        if fresh.any():
            col.values = pa.concat_arrays([col.values, values.filter(pa.array(fresh))])
            col.counts = np.concatenate([col.counts, counts[fresh]])
        order = np.argsort(-col.counts, kind="stable")[:keep]
        col.values = col.values.take(pa.array(order))
        col.counts = col.counts[order]
        col.pruned = True

    # Results ------------------------------------------------------------------------------
    def _profile(self, col: _Column) -> ColumnProfile:
        base: dict[str, Any] = {
            "name": col.name,
            "type": str(col.type),
            "kind": col.kind,
            "count": col.count,
            "missing": col.missing,
        }
        if col.kind is ColumnKind.NUMERIC:
            if col.count:
                sample = np.sort(col.reservoir)
                with np.errstate(invalid="ignore"):  # infinities interpolate to NaN: None
                    quantiles = {
                        k: _finite(float(np.quantile(sample, q))) for k, q in QUANTILES.items()
                    }
                base |= {
                    "min": _number(col.min),
                    "max": _number(col.max),
                    "mean": _finite(col.mean),
                    "std": _finite(math.sqrt(col.m2 / (col.count - 1))) if col.count > 1 else None,
                    "quantiles": quantiles,
                    "quantiles_exact": col.seen <= RESERVOIR_SIZE,
                }
        elif col.kind is ColumnKind.BOOLEAN:
            base |= {
                "true_count": col.true_count,
                "false_count": col.count - col.true_count,
                "mean": col.true_count / col.count if col.count else None,
            }
        elif col.kind is ColumnKind.DATETIME:
            base |= {"min": _iso(col.min), "max": _iso(col.max)}
        elif col.kind is ColumnKind.CATEGORICAL:
            top = [] if col.values is None else _top(col.values, col.counts)
            base |= {
                "distinct": len(col.counts) if not col.pruned else _kmv_estimate(col.kmv),
                "distinct_exact": not col.pruned,
                "top": [TopValue(value=str(v), count=n) for v, n in top],
            }
        return ColumnProfile(**base)


def _top(values: Any, counts: np.ndarray[Any, Any]) -> list[tuple[Any, int]]:
    """The :data:`TOP_VALUES` most frequent values with their counts, ties by value: only the
    values that can be among them (every count above the last place's, and the smallest of
    the values tied at it) leave Arrow."""
    chosen = np.arange(len(counts))
    if len(counts) > TOP_VALUES:
        last = np.partition(counts, len(counts) - TOP_VALUES)[len(counts) - TOP_VALUES]
        above, tied = np.flatnonzero(counts > last), np.flatnonzero(counts == last)
        room = TOP_VALUES - len(above)
        if len(tied) > room:  # the smallest tied values (UTF-8 order is code point order)
            tied = tied[pc.sort_indices(values.take(pa.array(tied))).to_numpy()[:room]]
        chosen = np.concatenate([above, tied])
    pairs = zip(values.take(pa.array(chosen)).to_pylist(), counts[chosen].tolist(), strict=True)
    return sorted(pairs, key=lambda kv: (-kv[1], kv[0]))[:TOP_VALUES]


class _Skips:
    """Where a full reservoir of ``k`` values takes the next ones: Li's Algorithm L (1994),
    which draws the gap to the next taken value instead of a number per value, so a column of
    n values costs about ``k * ln(n / k)`` draws. Value i (0-based) is taken with probability
    k / (i + 1), into a uniformly random slot, as in Algorithm R.

    The draws come from ``rng`` in blocks of taken values, the first of :data:`_SKIP_BLOCK`,
    each next one twice as large up to :data:`_SKIP_BLOCK_MAX`, whatever the batches are, so
    the sample depends on the column's name and values only.
    """

    def __init__(self, rng: np.random.Generator, k: int) -> None:
        self._rng = rng
        self._k = k
        self._log_w = math.log(1.0 - rng.random()) / k  # log W, W in (0, 1]
        self._last = k - 1  # the place of the last value taken (the reservoir's last, at first)
        self._places = np.empty(0, dtype=np.int64)
        self._slots = np.empty(0, dtype=np.int64)
        self._block = _SKIP_BLOCK

    def until(self, end: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """The places before ``end`` (and after those already answered) where a value is
        taken, with the slot each goes to, in order."""
        while not len(self._places) or self._places[-1] < end:
            self._draw()
        cut = int(np.searchsorted(self._places, end))
        places, slots = self._places[:cut], self._slots[:cut]
        self._places, self._slots = self._places[cut:], self._slots[cut:]
        return places, slots

    def _draw(self) -> None:
        n, k = self._block, self._k
        self._block = min(2 * n, _SKIP_BLOCK_MAX)
        gaps = 1.0 - self._rng.random(n)  # (0, 1]
        shrink = np.log(1.0 - self._rng.random(n)) / k  # log of W's factor after each take
        slots = self._rng.integers(0, k, n)
        log_w = self._log_w + np.concatenate([[0.0], np.cumsum(shrink)])
        with np.errstate(divide="ignore", invalid="ignore"):  # W == 1 or W == 0: gap 0 or max
            skip = np.fmin(np.floor(np.log(gaps) / np.log1p(-np.exp(log_w[:-1]))), _MAX_SKIP)
        places = self._last + np.cumsum(skip.astype(np.int64) + 1)
        self._log_w = float(log_w[-1])
        self._last = int(places[-1])
        self._places = np.concatenate([self._places, places])
        self._slots = np.concatenate([self._slots, slots])


#: Taken values drawn at a time by :class:`_Skips` (first, most), and the largest gap (beyond
#: any column).
_SKIP_BLOCK = 1024
_SKIP_BLOCK_MAX = 1 << 13
_MAX_SKIP = float(1 << 40)


def _generator(name: str) -> np.random.Generator:
    """The reservoir generator of the column ``name``: seeded by the profile's seed and the
    name, so the draws do not depend on the column's place or on the other columns."""
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return np.random.default_rng([_SEED, int.from_bytes(digest[:8], "little")])


def _number(value: Any) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return _finite(float(value))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


def _hash_sketch(col: _Column, values: Any) -> None:
    """Add the hashes of the distinct ``values`` to the column's k-minimum-values sketch."""
    hashes = _hash_strings(values)
    if len(col.kmv) == KMV_SIZE:  # only hashes below the k-th smallest can enter
        hashes = hashes[hashes < col.kmv[-1]]
    if not len(hashes):
        return
    merged = np.concatenate([col.kmv, hashes])
    merged.sort()
    distinct = np.empty(len(merged), dtype=bool)  # np.unique, without its per-call cost
    distinct[0] = True
    np.not_equal(merged[1:], merged[:-1], out=distinct[1:])
    col.kmv = merged[distinct][:KMV_SIZE]


def _hash_strings(values: Any) -> np.ndarray[Any, Any]:
    """64-bit hashes of the strings of an Arrow string or binary array without nulls, computed
    on its buffers: each byte, keyed by its position in its value, is mixed by splitmix64 and
    the results XORed per value (tabulation hashing with a hashed table), then mixed with the
    length. Pieces of about :data:`_HASH_PIECE_BYTES` keep the temporary arrays small."""
    if not pa.types.is_string(values.type) and not pa.types.is_binary(values.type):
        values = values.cast(pa.large_binary() if _is_large(values.type) else pa.binary())
    n = len(values)
    if not n:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buffer, data_buffer = values.buffers()[:3]
    wide = np.int64 if _is_large(values.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=wide)[values.offset : values.offset + n + 1]
    offsets = offsets.astype(np.int64)
    data = np.frombuffer(data_buffer, dtype=np.uint8) if data_buffer is not None else None
    out = np.empty(n, dtype=np.uint64)
    cuts = np.searchsorted(offsets, np.arange(offsets[0], offsets[-1], _HASH_PIECE_BYTES))
    bounds = [*np.unique(np.clip(cuts, 0, n)).tolist(), n]
    for lo, hi in itertools.pairwise(bounds):
        if hi > lo:
            out[lo:hi] = _hash_piece(data, offsets[lo : hi + 1])
    return out


def _hash_piece(data: Any, offsets: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    lengths = np.diff(offsets)
    hashes = np.zeros(len(lengths), dtype=np.uint64)
    if data is not None and offsets[-1] > offsets[0]:
        chunk = data[offsets[0] : offsets[-1]].astype(np.uint64)
        starts = offsets[:-1] - offsets[0]
        position = np.arange(len(chunk), dtype=np.uint64)
        position -= np.repeat(starts, lengths).astype(np.uint64)
        mixed = _splitmix64((position << np.uint64(8)) | chunk)
        filled = lengths > 0
        hashes[filled] = np.bitwise_xor.reduceat(mixed, starts[filled])
    return _splitmix64(hashes ^ (lengths.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)))


def _splitmix64(x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The splitmix64 finaliser, element-wise (wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        out: np.ndarray[Any, Any] = x + np.uint64(_HASH_SEED)  # a copy, then in place
        out ^= out >> np.uint64(30)
        out *= np.uint64(0xBF58476D1CE4E5B9)
        out ^= out >> np.uint64(27)
        out *= np.uint64(0x94D049BB133111EB)
        out ^= out >> np.uint64(31)
        return out


def _is_large(t: Any) -> bool:
    return bool(pa.types.is_large_string(t) or pa.types.is_large_binary(t))


def _kmv_estimate(kmv: np.ndarray[Any, Any]) -> int:
    """Distinct values from the k smallest 64-bit hashes: (k - 1) / (k-th smallest / 2^64)."""
    if len(kmv) < KMV_SIZE:
        return len(kmv)
    kth = float(kmv[-1]) / 2.0**64
    return round((KMV_SIZE - 1) / kth)
