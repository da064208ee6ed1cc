"""Names people choose and names people act under: the one validator for each.

Entity names (projects, experiments, registered models, datasets, endpoints, aliases) are ASCII
letters, digits, ``.``, ``_`` and ``-``; they are unique *case-insensitively* within their scope
and found case-insensitively (``name_key``), while the case given at creation is what is shown.
Because they are ASCII, ``name_key`` agrees with SQL ``lower()`` on every backend, which is what
the unique indexes of migration 0007 are built on.

User names (``X-CivicML-User``, ``CIVICML_USER``, ``--user``) may be any printable Unicode (an
e-mail address, ``DOMAIN\\user``, ``José``), but never a character that does not show: control
characters (C0 and C1), format characters (zero-width spaces and joiners, bidirectional overrides
and isolates, the byte-order mark), surrogates, private-use or unassigned code points, and other
default-ignorable fillers. Otherwise the audit trail would record an actor nobody can read.
"""

from __future__ import annotations

import re
import unicodedata

from civicml.core.errors import InvalidInputError

__all__ = [
    "NAME_PATTERN",
    "USER_NAME_MAX",
    "already_exists",
    "invisible_characters",
    "name_key",
    "same_user",
    "user_key",
    "validate_name",
    "validate_user_name",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
USER_NAME_MAX = 128  # audit_events.actor and every created_by column hold 128 characters

# Unicode categories that never render as a visible character of a name: Cc control, Cf format
# (U+200B-U+200F, U+202A-U+202E, U+2060-U+2064, U+2066-U+2069, U+FEFF, ...), Cs surrogate,
# Co private use, Cn unassigned, Zl/Zp line and paragraph separators.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Default-ignorable code points outside those categories (fillers and variation selectors that
# render as nothing), from Unicode's DerivedCoreProperties.txt, Default_Ignorable_Code_Point.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # COMBINING GRAPHEME JOINER
    (0x115F, 0x1160),  # HANGUL CHOSEONG / JUNGSEONG FILLER
    (0x17B4, 0x17B5),  # KHMER VOWEL INHERENT AQ / AA
    (0x180B, 0x180F),  # MONGOLIAN FREE VARIATION SELECTORS
    (0x2800, 0x2800),  # BRAILLE PATTERN BLANK (not default-ignorable, but blank)
    (0x3164, 0x3164),  # HANGUL FILLER
    (0xFE00, 0xFE0F),  # VARIATION SELECTORS
    (0xFFA0, 0xFFA0),  # HALFWIDTH HANGUL FILLER
    (0xE0100, 0xE01EF),  # VARIATION SELECTORS SUPPLEMENT
)


def validate_name(kind: str, name: object) -> str:
    """Check a user-chosen entity name (project, experiment, model, dataset, endpoint, alias).

    Args:
        kind: What is named, for the message (``"Model"``).
        name: The name given.

    Returns:
        The name, unchanged.

    Raises:
        InvalidInputError: When the name is empty, too long or has characters outside
            ``A-Z a-z 0-9 . _ -`` (so no control, invisible or look-alike characters).
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"{kind} name {name!r} is not valid.",
            hint="Use 1-128 characters: letters, digits, '.', '_' or '-', starting with a "
            "letter or digit, e.g. 'benefits-eligibility'.",
        )
    return name


def name_key(name: str) -> str:
    """The form of an entity name that lookups and uniqueness compare (``Elig`` -> ``elig``).

    Entity names are ASCII, so this equals SQL ``lower(name)`` on SQLite and PostgreSQL.
    """
    return name.lower()


def already_exists(kind: str, name: str, existing: str, *, scope: str = "") -> str:
    """The message of a 409 for creating ``name`` when ``existing`` holds the name already.

    When only the letter case differs it names the existing entity (``ELIG`` after ``elig``).

    Example:
        >>> already_exists("Model", "ELIG", "elig", scope="project 'benefits'")
        "Model 'ELIG' conflicts with the existing model 'elig' in project 'benefits': names are unique regardless of letter case."
    """  # noqa: E501
    where = f" in {scope}" if scope else ""
    if existing == name:
        return f"{kind} {name!r} already exists{where}."
    return (
        f"{kind} {name!r} conflicts with the existing {kind.lower()} {existing!r}{where}: "
        "names are unique regardless of letter case."
    )


def user_key(name: str) -> str:
    """The form of a user name that identities are compared in: Unicode NFKC, case-folded
    (``Data-Scientist``, ``DATA-SCIENTIST`` and the same in full-width letters are one user)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def same_user(first: str | None, second: str | None) -> bool:
    """Whether two user names name the same user (:func:`user_key`); ``None`` is no one."""
    return first is not None and second is not None and user_key(first) == user_key(second)


def invisible_characters(text: str) -> list[str]:
    """The characters of ``text`` that would not show, as ``U+XXXX NAME`` (empty when none)."""
    if text.isascii() and text.isprintable():  # the common case: no ASCII glyph is invisible
        return []
    found: list[str] = []
    for char in text:
        point = ord(char)
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES or any(
            low <= point <= high for low, high in _IGNORABLE_RANGES
        ):
            label = f"U+{point:04X} {unicodedata.name(char, '')}".rstrip()
            if label not in found:
                found.append(label)
    return found


def validate_user_name(name: object, *, source: str = "user name") -> str:
    """Check the name a caller acts under; returns it in Unicode NFC form.

    Args:
        name: The name given (``X-CivicML-User``, ``CIVICML_USER``, ``--user``).
        source: Where it came from, for the message.

    Raises:
        InvalidInputError: The name is empty, longer than 128 characters, has leading or
            trailing white space, starts with a combining mark, or holds a control, format
            (zero-width, bidirectional override, BOM), surrogate, private-use, unassigned or
            other invisible character.
    """
    hint = (
        "Use a printable name of 1-128 characters without control, zero-width or "
        "bidirectional-override characters, e.g. 'alice' or 'alice@example.org'."
    )
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"The {source} is empty.", hint=hint)
    text = unicodedata.normalize("NFC", name)
    bad = invisible_characters(text)
    if bad:
        raise InvalidInputError(
            f"The {source} {name!r} contains characters that do not show: {', '.join(bad)}.",
            hint=hint,
        )
    if len(text) > USER_NAME_MAX:
        raise InvalidInputError(
            f"The {source} is {len(text)} characters long; at most {USER_NAME_MAX} are allowed.",
            hint=hint,
        )
    if text != text.strip() or any(c.isspace() and c != " " for c in text):
        raise InvalidInputError(
            f"The {source} {name!r} has leading, trailing or non-space white space.", hint=hint
        )
    if unicodedata.category(text[0]).startswith("M"):
        raise InvalidInputError(f"The {source} {name!r} starts with a combining mark.", hint=hint)
    return text
