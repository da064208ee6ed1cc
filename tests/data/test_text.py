"""The CSV transcoder's UTF-8 path (``civicml.data.text``): valid UTF-8 is checked by Arrow's
validator and kept as bytes, a character cut by a read waits for the next one, and anything
Python's strict codec refuses is refused with the same line-numbered message."""

from __future__ import annotations

import io
import random

import pytest

from civicml.core import InvalidInputError
from civicml.data.text import TextOptions, TextReader, valid_utf8

PIECES = [b"a", b"\n", b",", "é".encode(), "€".encode(), "😀".encode(), "Ω".encode()]
BROKEN = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]


def _utf8_by_python(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_valid_utf8_judges_as_pythons_codec() -> None:
    rng = random.Random(7)
    cases = [b"", *BROKEN]
    for _ in range(3_000):
        parts = [rng.choice(PIECES) for _ in range(rng.randint(0, 12))]
        if rng.random() < 0.5:
            parts.insert(rng.randint(0, len(parts)), rng.choice(BROKEN))
        data = b"".join(parts)
        if data and rng.random() < 0.3:  # cut anywhere, often inside a character
            data = data[: rng.randint(0, len(data))]
        cases.append(data)
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8))) for _ in range(2_000)]

    for data in cases:
        assert valid_utf8(data) is _utf8_by_python(data), data
        assert valid_utf8(memoryview(data)) is _utf8_by_python(data), data


def _reader(data: bytes, block: int) -> TextReader:
    return TextReader(io.BytesIO(data), TextOptions("utf-8", ","), "test.csv", block=block)


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64])
def test_utf8_read_in_any_blocks_is_kept_byte_for_byte(block: int) -> None:
    rng = random.Random(block)
    text = b"".join(rng.choice(PIECES) for _ in range(4_000))

    reader = _reader(text, block)
    out = reader.read()

    assert out == text
    assert reader.line == text.count(b"\n") + 1


@pytest.mark.parametrize("block", [3, 7, 64])
def test_bad_bytes_after_valid_text_name_their_line(block: int) -> None:
    good = "id,city\n" + "".join(f"{i},Zürich €\n" for i in range(50))
    data = good.encode() + b"50,Montr\xe9al\n"

    with pytest.raises(InvalidInputError, match=r"not valid utf-8 text at line 52: byte 0xe9"):
        _reader(data, block).read()


def test_a_character_cut_by_the_end_of_the_file_is_refused() -> None:
    data = "id,city\n1,Zürich\n2,".encode() + "€".encode()[:2]

    with pytest.raises(InvalidInputError, match="an incomplete character at the end of the file"):
        _reader(data, 4).read()
