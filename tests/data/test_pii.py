"""Personal data (``civicml.data.pii``, ``redaction``, ``personal``): detection measured for
precision and recall on a labelled synthetic set of real-looking personal data and look-alikes,
classification, redaction transforms, keyed hashing under the key provider, k-anonymity,
DerivedFrom lineage and the training policy."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import random
import uuid
from datetime import date, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from civicml.core import ConflictError, InvalidInputError, PermissionDeniedError
from civicml.core.identity import Principal
from civicml.data import DatasetService
from civicml.data._tables import pseudonym_keys
from civicml.data.personal import PersonalDataService
from civicml.data.pii import (
    DETECTED,
    classify,
    detect_column,
    iban_valid,
    luhn_valid,
    needs_values,
    scan_table,
)
from civicml.data.pii_patterns import VALUE_DETECTORS, name_like, possible, postcode_like
from civicml.data.pii_schemas import PiiType, RedactRequest
from civicml.governance import AuditTrail, LineageService, ProjectService
from civicml.store import Context

P = "benefits"
N = 200
FIRST = ["Mary", "John", "Aisha", "Wei", "Carlos", "Fatima", "Olga", "Liam", "Noah", "Zoe"]
LAST = ["Smith", "Johnson", "O'Brien", "Nguyen", "García", "Okafor", "Kowalski", "McDonald"]
STREETS = ["Baker Street", "High St", "Elm Road", "Maple Avenue", "Queen's Drive", "Park Lane"]


def _iban(rng: random.Random) -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    moved = bban + "DE00"
    check = 98 - int("".join(str(int(c, 36)) for c in moved)) % 97
    raw = f"DE{check:02d}{bban}"
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4)) if rng.random() < 0.5 else raw


def _card(rng: random.Random) -> str:
    body = rng.choice(["4", "51", "37"]) + "".join(rng.choice("0123456789") for _ in range(13))
    body = body[: 14 if body.startswith("37") else 15]
    for d in "0123456789":
        if luhn_valid(body + d):
            number = body + d
            break
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def _not_luhn(rng: random.Random) -> str:
    while True:
        number = "4" + "".join(rng.choice("0123456789") for _ in range(15))
        if not luhn_valid(number):
            return number


def _ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _bad_ssn(rng: random.Random) -> str:
    area = rng.choice(["000", "666", f"{rng.randint(900, 999)}"])
    return f"{area}-{rng.randint(0, 99):02d}-{rng.randint(0, 9999):04d}"


def _nino(rng: random.Random) -> str:
    first, second = "ACEHJKLMPRSTWXY", "ABCEHJKLMNPRSTWXYZ"
    while True:
        prefix = rng.choice(first) + rng.choice(second)
        if prefix not in {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}:
            break
    digits = "".join(rng.choice("0123456789") for _ in range(6))
    return f"{prefix} {digits[:2]} {digits[2:4]} {digits[4:]} {rng.choice('ABCD')}"


def _phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    return rng.choice(
        [
            f"+44 20 {d(4)} {d(4)}",
            f"({d(3)}) {d(3)}-{d(4)}",
            f"{d(3)}-{d(3)}-{d(4)}",
            f"020 {d(4)} {d(4)}",
            f"+1-202-555-{d(4)}",
            f"0161 {d(3)} {d(4)}",
        ]
    )


def _ip(rng: random.Random) -> str:
    if rng.random() < 0.8:
        return ".".join(str(rng.randint(1, 254)) for _ in range(4))
    return str(ipaddress.IPv6Address(rng.getrandbits(128)))


def labelled(seed: int = 7) -> tuple[pa.Table, dict[str, PiiType | None]]:
    """Columns of each kind of personal data and of look-alikes, with their true labels."""
    rng = random.Random(seed)
    name = lambda: f"{rng.choice(FIRST)} {rng.choice(LAST)}"  # noqa: E731
    cols: dict[str, tuple[list[object], PiiType | None]] = {
        "contact": (
            [f"{rng.choice(FIRST).lower()}.{i}@mail.example.org" for i in range(N)],
            PiiType.EMAIL,
        ),
        "telephone": ([_phone(rng) for _ in range(N)], PiiType.PHONE),
        "ssn": ([_ssn(rng) for _ in range(N)], PiiType.US_SSN),
        "ni_number": ([_nino(rng) for _ in range(N)], PiiType.UK_NINO),
        "payee": ([_iban(rng) for _ in range(N)], PiiType.IBAN),
        "card_number": ([_card(rng) for _ in range(N)], PiiType.PAYMENT_CARD),
        "client_ip": ([_ip(rng) for _ in range(N)], PiiType.IP_ADDRESS),
        "date_of_birth": (
            [date(1940, 1, 1) + timedelta(days=rng.randint(0, 24000)) for _ in range(N)],
            PiiType.DATE_OF_BIRTH,
        ),
        "location": (
            [f"{rng.randint(1, 999)} {rng.choice(STREETS)}, Springfield" for _ in range(N)],
            PiiType.POSTAL_ADDRESS,
        ),
        "applicant_name": ([name() for _ in range(N)], PiiType.PERSON_NAME),
        "surname": ([rng.choice(LAST) for _ in range(N)], PiiType.PERSON_NAME),
        "postcode": (
            [
                rng.choice(["SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT"])
                for _ in range(N)
            ],
            PiiType.POSTCODE,
        ),
        "age": ([rng.randint(18, 95) for _ in range(N)], PiiType.AGE),
        "contact_mixed": (
            [f"r{i}@agency.example" if i % 5 > 1 else "n/a" for i in range(N)],
            PiiType.EMAIL,
        ),
        "mobile": ([_phone(rng) if i % 5 else "" for i in range(N)], PiiType.PHONE),
        # look-alikes: none of these is personal data
        "isbn": (
            [
                f"978-{rng.randint(0, 9)}-{rng.randint(10, 99)}-{rng.randint(100000, 999999)}-"
                f"{rng.randint(0, 9)}"
                for _ in range(N)
            ],
            None,
        ),
        "mac": ([":".join(f"{rng.randint(0, 255):02X}" for _ in range(6)) for _ in range(N)], None),
        "lat_lon": (
            [f"{rng.uniform(-90, 90):.4f},{rng.uniform(-180, 180):.4f}" for _ in range(N)],
            None,
        ),
        "bic": ([rng.choice(["DEUTDEFF", "NWBKGB2L", "BNPAFRPP"]) for _ in range(N)], None),
        "serial": (
            [f"SN-{rng.randint(10000, 99999)}-{rng.randint(10000, 99999)}" for _ in range(N)],
            None,
        ),
        "case_code": ([_bad_ssn(rng) for _ in range(N)], None),
        "reference_number": ([_not_luhn(rng) for _ in range(N)], None),
        "account_ref": ([_iban(rng)[:-1] + "0" for _ in range(N)], None),
        "software_version": (
            [f"{rng.randint(1, 20)}.{rng.randint(0, 9)}.{rng.randint(0, 99)}" for _ in range(N)],
            None,
        ),
        "product_name": ([f"{rng.choice(['Deluxe', 'Basic'])} Widget" for _ in range(N)], None),
        "office_name": ([f"{rng.choice(['North', 'South'])} Office" for _ in range(N)], None),
        "order_date": (
            [date(2020, 1, 1) + timedelta(days=rng.randint(0, 900)) for _ in range(N)],
            None,
        ),
        "amount": ([round(rng.uniform(1, 5000), 2) for _ in range(N)], None),
        "request_id": ([str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(N)], None),
        "checksum": ([hashlib.sha256(str(i).encode()).hexdigest() for i in range(N)], None),
        "invoice": ([f"INV-2023-{i:06d}" for i in range(N)], None),
        "notes": (["Applicant asked for a review of the decision."] * N, None),
        "quantity": ([rng.randint(10000, 99999) for _ in range(N)], None),
        "tax_code": ([f"GB{rng.randint(100000, 999999)}A" for _ in range(N)], None),
        "score": ([rng.randint(0, 300) for _ in range(N)], None),
        "region": ([rng.choice(["north", "south", "east"]) for _ in range(N)], None),
        "timestamp_ms": ([rng.randint(10**12, 2 * 10**12) for _ in range(N)], None),
    }
    table = pa.table({k: v for k, (v, _) in cols.items()})
    return table, {k: label for k, (_, label) in cols.items()}


def test_detection_precision_and_recall_on_a_labelled_synthetic_set() -> None:
    table, labels = labelled()
    scan = scan_table(table)
    predicted: dict[str, PiiType] = {}
    for f in scan.findings:  # most confident first
        if f.confidence >= DETECTED and f.column not in predicted:
            predicted[f.column] = f.type
    tp = sum(1 for c, t in predicted.items() if labels[c] is t)
    positives = sum(1 for t in labels.values() if t is not None)
    precision, recall = tp / len(predicted), tp / positives
    wrong = {c: (t, labels[c]) for c, t in predicted.items() if labels[c] is not t}
    missed = [c for c, t in labels.items() if t is not None and c not in predicted]
    assert precision >= 0.9, wrong
    assert recall >= 0.9, missed
    assert (scan.complete, scan.columns_scanned, scan.rows_scanned) == (True, len(labels), N)
    assert classify(scan.findings).value == "personal"


def test_a_scan_reading_only_the_columns_it_needs_finds_the_same() -> None:
    table, _ = labelled()
    # Look-alike values under names that hint at nothing, in types a scan does not read.
    extra = {
        "reference": pa.array([123456789] * N),  # SSN-shaped whole numbers
        "amount": pa.array([4111111111111111.0] * N),  # a card number as a float
        "when": pa.array([date(1980, 5, 1)] * N),
        "flag": pa.array([True] * N),
    }
    for name, values in extra.items():
        table = table.append_column(name, values)
        assert not needs_values(name, values.type)
        assert detect_column(name, values.type, values.to_pylist()) == []
    hinted = {("ssn", pa.int64()), ("age", pa.float64()), ("birth_date", pa.date32()),
              ("phone", pa.int64()), ("zip", pa.int32()), ("name", pa.string())}  # fmt: skip
    assert all(needs_values(name, t) for name, t in hinted)
    read = [f.name for f in table.schema if needs_values(f.name, f.type)]
    assert len(read) < table.num_columns
    full, partial = scan_table(table), scan_table(table.select(read), schema=table.schema)
    assert partial == full and full.columns_scanned == table.num_columns


def test_the_prefilter_never_hides_a_match() -> None:
    """Every text a detector accepts passes its prefilter: the labelled set, and random texts
    of digits (ASCII, Arabic-Indic, superscripts), letters and separators."""
    table, _ = labelled()
    texts = {str(v).strip() for column in table.columns for v in column.to_pylist() if v}
    rng = random.Random(3)
    alphabet = "0123456789" * 4 + "\u0661\u0662\u0663\u00b2\u00b9" + "ABGHNSWZabz @.:-+() /"
    texts |= {"".join(rng.choices(alphabet, k=rng.randint(1, 30))) for _ in range(20_000)}
    texts |= {
        "\u0661\u0662\u0663-\u0664\u0665-\u0666\u0667\u0668\u0669",
        "+\u00b2\u00b2 123 456 789",
    }
    keys = sorted(texts)
    allowed = possible(keys)
    tests = {**VALUE_DETECTORS, PiiType.POSTCODE: postcode_like, PiiType.PERSON_NAME: name_like}
    accepted_somewhere = 0
    for kind, test in tests.items():
        accepted = [t for t in keys if test(t)]
        accepted_somewhere += len(accepted)
        hidden = [t for t, ok in zip(keys, allowed[kind], strict=True) if test(t) and not ok]
        assert not hidden, (kind, hidden[:5])
    assert accepted_somewhere > 1_000  # the corpus does exercise the detectors


def test_texts_that_are_not_utf8_are_still_scanned() -> None:
    # Enough distinct texts for the vectorised prefilter, one of them with a lone surrogate.
    values = [f"123-45-{6700 + i}" for i in range(70)] + [f"bad \ud800 {i}" for i in range(30)]
    (found,) = detect_column("ref", pa.string(), values)
    assert (found.type, found.matched, found.sampled) == (PiiType.US_SSN, 70, 100)


def test_repeated_values_count_once_each_time_they_occur() -> None:
    values = ["123-45-6789"] * 30 + ["north"] * 70
    (found,) = detect_column("ref", pa.string(), values)
    assert (found.type, found.matched, found.sampled, found.confidence) == (
        PiiType.US_SSN, 30, 100, 0.3
    )  # fmt: skip


def test_check_digits() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")  # mod-97 fails
    assert not iban_valid("GB82 WEST 1234 5698 7654")  # GB IBANs have 22 characters


def test_classification_levels() -> None:
    quasi = pa.table({"age": list(range(20, 60)), "region": ["n"] * 40})
    assert classify(scan_table(quasi).findings).value == "confidential"
    plain = pa.table({"income": [1.5] * 40, "region": ["n"] * 40})
    assert classify(scan_table(plain).findings).value == "internal"


@pytest.fixture
def personal(ctx: Context) -> PersonalDataService:
    ProjectService(ctx).ensure(P, "projects.read")
    return PersonalDataService(ctx)


def _people(n: int = 40) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "name": [f"{FIRST[i % 10]} {LAST[i % 8]}" for i in range(n)],
            "email": [f"person{i}@mail.example.org" for i in range(n)],
            "birth_date": [date(1950 + i % 40, 1 + i % 12, 1 + i % 28) for i in range(n)],
            "age": [20 + i % 40 for i in range(n)],
            "postcode": [["SW1A 1AA", "SW1A 2BB", "M1 1AE", "M1 2ZZ"][i % 4] for i in range(n)],
            "income": [1000.0 + i for i in range(n)],
        }
    )


def test_ingest_scans_and_classifies_dataset_and_version(
    ctx: Context, personal: PersonalDataService
) -> None:
    v = DatasetService(ctx).ingest(P, "people", _people())
    assert v.classification == "personal"
    report = personal.report(v)
    assert {(f.column, f.type.value) for f in report.findings if f.confidence >= DETECTED} >= {
        ("name", "person_name"),
        ("email", "email"),
        ("birth_date", "date_of_birth"),
        ("age", "age"),
        ("postcode", "postcode"),
    }
    assert personal.get_classification(P, "people").value == "personal"
    html = personal.report_html(v).decode()
    assert "person0@mail" not in html and "email" in html  # where, never what
    assert "person0@mail" not in report.model_dump_json()


def test_redaction_writes_a_derived_successor(ctx: Context, personal: PersonalDataService) -> None:
    datasets = DatasetService(ctx)
    v = datasets.ingest(P, "people", _people())
    request = RedactRequest.model_validate(
        {
            "rules": [
                {"column": "name", "action": "drop"},
                {"column": "email", "action": "hash"},
                {"column": "birth_date", "action": "generalize_date", "granularity": "year"},
                {"column": "age", "action": "age_band", "width": 20},
                {"column": "postcode", "action": "postcode_prefix"},
            ],
            "quasi_identifiers": ["age", "postcode"],
            "min_k": 5,
        }
    )
    result = personal.redact(v, request)
    out = datasets.to_pandas(result.version)
    assert list(out.columns) == ["email", "birth_date", "age", "postcode", "income"]
    assert set(out["age"]) == {"20-39", "40-59"} and set(out["postcode"]) == {"SW1A", "M1"}
    assert out["birth_date"][0] == "1950" and len(out["email"][0]) == 64
    assert result.k_anonymity is not None and result.k_anonymity.k == 10
    assert result.k_anonymity.groups == 4
    assert result.version.redacted_from == v.id and result.classification.value == "confidential"
    graph = LineageService(ctx).query("dataset_version", v.id, direction="downstream")
    assert any(e.kind == "DerivedFrom" for e in graph.edges)
    assert [e.action for e in AuditTrail(ctx).list(project=P)][-1] == "dataset_version.redacted"
    # keyed hashing: stable within the project, not a plain hash, secret stored only wrapped
    again = personal.redact(v, request.model_copy(update={"target": "people-b"}))
    assert list(datasets.to_pandas(again.version)["email"]) == list(out["email"])
    assert out["email"][0] != hashlib.sha256(b"person0@mail.example.org").hexdigest()
    with ctx.db.read() as conn:
        row = conn.execute(pseudonym_keys.select()).one()
    assert row.name == "default" and len(row.wrapped) > 40
    ctx.artifacts.rotate_keys()  # the secret is re-wrapped under the new key on next use
    third = personal.redact(v, request.model_copy(update={"target": "people-c"}))
    assert list(datasets.to_pandas(third.version)["email"]) == list(out["email"])


def test_redaction_refusals(ctx: Context, personal: PersonalDataService) -> None:
    v = DatasetService(ctx).ingest(P, "people", _people())
    k_fail = RedactRequest.model_validate(
        {
            "rules": [{"column": "name", "action": "drop"}],
            "quasi_identifiers": ["email"],
            "min_k": 2,
        }
    )
    with pytest.raises(ConflictError, match="only 1-anonymous over email"):
        personal.redact(v, k_fail)
    assert DatasetService(ctx).get_dataset(P, "people").latest_version == 1  # nothing written
    bad_rules = [
        ({"column": "nope", "action": "drop"}, "'nope' are not in the dataset version"),
        ({"column": "email", "action": "age_band"}, "age_band needs a number"),
    ]
    for rule, message in bad_rules:
        with pytest.raises(InvalidInputError, match=message):
            personal.redact(v, RedactRequest.model_validate({"rules": [rule]}))
    with pytest.raises(ValueError, match="more than one rule"):
        RedactRequest.model_validate(
            {"rules": [{"column": "a", "action": "drop"}, {"column": "a", "action": "mask"}]}
        )


def test_policy_refuses_personal_data_until_redacted_or_justified(ctx: Context) -> None:
    strict = dataclasses.replace(
        ctx,
        settings=ctx.settings.model_copy(
            update={"datasets_personal_training": "redacted_or_justified"}
        ),
    )
    ProjectService(strict).ensure(P, "projects.read")
    datasets = DatasetService(strict)
    v = datasets.ingest(P, "people", _people())
    with pytest.raises(ConflictError, match="is classified personal") as caught:
        datasets.check_usable(v)
    assert "civicml datasets redact" in (caught.value.hint or "")
    redacted = PersonalDataService(strict).redact(
        v,
        RedactRequest.model_validate(
            {
                "rules": [
                    {"column": "name", "action": "drop"},
                    {"column": "email", "action": "hash"},
                    {"column": "birth_date", "action": "drop"},
                ]
            }
        ),
    )
    datasets.check_usable(redacted.version)  # confidential: may be trained on
    scientist = PersonalDataService(
        strict.as_principal(Principal("dana", frozenset({"data-scientist"})))
    )
    with pytest.raises(PermissionDeniedError, match=r"datasets\.override_quarantine"):
        scientist.justify_personal_use(v, justification="approved by the privacy board, ref 12")
    reviewer = PersonalDataService(strict.as_principal(Principal("rita", frozenset({"reviewer"}))))
    reviewer.justify_personal_use(v, justification="approved by the privacy board, ref 12")
    datasets.check_usable(v)
    event = AuditTrail(strict).list(project=P)[-1]
    assert (event.action, event.actor) == ("dataset_version.personal_use_justified", "rita")
    DatasetService(ctx).check_usable(v)  # the default policy allows it anyway


def test_scan_permissions(ctx: Context, personal: PersonalDataService) -> None:
    v = DatasetService(ctx).ingest(P, "people", _people())
    viewer = PersonalDataService(ctx.as_principal(Principal("val", frozenset({"viewer"}))))
    with pytest.raises(PermissionDeniedError, match=r"datasets\.write"):
        viewer.scan(v)
    with pytest.raises(PermissionDeniedError, match=r"datasets\.write"):
        viewer.redact(
            v, RedactRequest.model_validate({"rules": [{"column": "name", "action": "drop"}]})
        )
    assert viewer.report(v).classification.value == "personal"
