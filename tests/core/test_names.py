"""The one validator of user names and entity names (``civicml.core.names``)."""

from __future__ import annotations

import re

import pytest

from civicml.core import InvalidInputError
from civicml.core.names import invisible_characters, name_key, validate_name, validate_user_name

INVISIBLE_USERS = {
    "alice\u202e": "U+202E RIGHT-TO-LEFT OVERRIDE",
    "al\u200bice": "U+200B ZERO WIDTH SPACE",
    "alice\u0085": "U+0085",  # C1 control (NEXT LINE)
    "\ufeffalice": "U+FEFF ZERO WIDTH NO-BREAK SPACE",
    "alice\u2066": "U+2066 LEFT-TO-RIGHT ISOLATE",
    "alice\x00": "U+0000",
    "alice\x1b[31m": "U+001B",
    "alice\ue000": "U+E000",  # private use
    "alice\ud800": "U+D800",  # lone surrogate
    "alice\U000e0001": "U+E0001 LANGUAGE TAG",
    "alice\u3164": "U+3164 HANGUL FILLER",
    "alice\ufe0f": "U+FE0F VARIATION SELECTOR-16",
    "alice\u2028": "U+2028 LINE SEPARATOR",
    "ali\u00adce": "U+00AD SOFT HYPHEN",
}


@pytest.mark.parametrize("name", ["alice", "alice@example.org", "CORP\\alice", "José", "Rosa Díaz"])
def test_printable_user_names_are_accepted(name: str) -> None:
    assert validate_user_name(name) == name


@pytest.mark.parametrize(("name", "label"), INVISIBLE_USERS.items())
def test_user_names_with_invisible_characters_are_refused(name: str, label: str) -> None:
    with pytest.raises(InvalidInputError, match="contains characters that do not show") as err:
        validate_user_name(name, source="X-CivicML-User header")

    assert label in err.value.message
    assert err.value.message.startswith("The X-CivicML-User header ")
    assert "zero-width" in (err.value.hint or "")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "The user name is empty."),
        ("a" * 129, "The user name is 129 characters long; at most 128 are allowed."),
        (" alice", "leading, trailing or non-space white space"),
        ("alice\u00a0smith", "leading, trailing or non-space white space"),
        ("\u0301alice", "starts with a combining mark"),
    ],
)
def test_malformed_user_names_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        validate_user_name(name)


def test_user_names_are_normalised_to_nfc() -> None:
    assert validate_user_name("Jose\u0301") == "Jos\u00e9"


def test_invisible_characters_lists_each_once() -> None:
    assert invisible_characters("a\u200bb\u200bc") == ["U+200B ZERO WIDTH SPACE"]
    assert invisible_characters("plain") == []


@pytest.mark.parametrize(("text", "found"), [("a\tb", "U+0009"), ("ab\x7f", "U+007F")])
def test_ascii_controls_are_invisible(text: str, found: str) -> None:
    # ASCII text skips the per-character look-up only when all of it is printable
    assert invisible_characters(text) == [found]
    with pytest.raises(InvalidInputError, match="contains characters that do not show"):
        validate_user_name(text)


@pytest.mark.parametrize("name", ["elig\u200b", "elig\u202e", "élig", "elig\n", "ELIG\u0130"])
def test_entity_names_are_ascii_only(name: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"Model name {name!r} is not valid.")):
        validate_name("Model", name)


def test_name_key_folds_case() -> None:
    assert name_key("Elig") == name_key("ELIG") == name_key("elig") == "elig"
