"""Real-world CSV files (issue 8): encodings and delimiters detected or given, recorded with the
version; binary or undecodable files refused with a line and a hint, never a traceback, and text
never stored as bytes. Through the service, the SDK (embedded and remote), the CLI and a real
server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from civicml.cli.main import main
from civicml.core import InvalidInputError
from civicml.data import DatasetService
from civicml.data.text import (
    check_delimiter,
    check_encoding,
    count_byte,
    detect_delimiter,
    detect_encoding,
)
from civicml.governance import AuditTrail, ProjectService
from civicml.sdk.client import connect
from civicml.store import Context
from tests.server.helpers import API, OCTET, assert_error

PROJECT = "benefits"
LATIN1 = b"income,r\xe9gion\n100,Montr\xe9al\n200,Qu\xe9bec\n"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(256)) * 4

# name: (bytes, columns, a value of the last row, encoding, delimiter)
CASES: dict[str, tuple[bytes, list[str], str, str, str]] = {
    "latin1_header_and_rows": (LATIN1, ["income", "région"], "Québec", "cp1252", ","),
    "cp1252": (
        "name,price\nCafé,3 €\n“quoted”,4 €\n".encode("cp1252"),
        ["name", "price"],
        "4 €",
        "cp1252",
        ",",
    ),
    "utf8_bom": (
        "\ufeffincome,région\n100,Montréal\n".encode(),
        ["income", "région"],
        "Montréal",
        "utf-8-sig",
        ",",
    ),
    "utf16_le_bom": (
        "income,région\r\n100,Montréal\r\n".encode("utf-16"),  # CPython writes LE with a BOM
        ["income", "région"],
        "Montréal",
        "utf-16-le",
        ",",
    ),
    "utf16_be_bom": (
        "\ufeffincome;région\n100;Zürich\n".encode("utf-16-be"),
        ["income", "région"],
        "Zürich",
        "utf-16-be",
        ";",
    ),
    "semicolon_decimal_comma": (
        b"income;region\n1520,5;north\n830,0;south\n",
        ["income", "region"],
        "south",
        "utf-8",
        ";",
    ),
    "tab": (
        b"income\tregion\n1520\tnorth\n830\tsouth\n",
        ["income", "region"],
        "south",
        "utf-8",
        "\t",
    ),
    "pipe": (
        b"income|region\n1520|north\n830|south\n",
        ["income", "region"],
        "south",
        "utf-8",
        "|",
    ),
    "comma_with_quoted_semicolons": (
        b'name,notes\nana,"a;b;c"\nrui,"d;e|f"\n',
        ["name", "notes"],
        "d;e|f",
        "utf-8",
        ",",
    ),
}


@pytest.fixture
def svc(ctx: Context) -> DatasetService:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    return DatasetService(ctx)


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / f"{name}.csv"
    path.write_bytes(data)
    return path


def _no_bytes(table: pa.Table) -> None:
    for field in table.schema:
        assert not pa.types.is_binary(field.type), field


# Service ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_encodings_and_delimiters_are_detected_and_recorded(
    svc: DatasetService, ctx: Context, tmp_path: Path, case: str
) -> None:
    data, columns, last, encoding, delimiter = CASES[case]
    v = svc.ingest(PROJECT, case.replace("_", "-"), _write(tmp_path, case, data))
    table = svc.read(v)
    _no_bytes(table)
    assert table.column_names == columns
    assert table.column(columns[-1]).to_pylist()[-1] == last
    assert v.read_options is not None
    assert (v.read_options.encoding, v.read_options.delimiter) == (encoding, delimiter)
    assert svc.get_version(PROJECT, v.name, v.version).read_options == v.read_options
    events = AuditTrail(ctx).list(project=PROJECT)
    event = [e for e in events if e.action == "dataset_version.created"][-1]
    assert event.after["read_options"] == {"encoding": encoding, "delimiter": delimiter}


def test_same_rows_in_any_encoding_are_the_same_version(
    svc: DatasetService, tmp_path: Path
) -> None:
    text = "id,city\n" + "".join(f"{i},Montréal-Zürich-日本\n" for i in range(3000))
    utf8 = svc.ingest(PROJECT, "cities", _write(tmp_path, "u8", text.encode()))
    # small chunks: characters and UTF-16 code units are split across reads
    utf16 = svc.ingest(
        PROJECT, "cities", _write(tmp_path, "u16", text.encode("utf-16")), chunk_bytes=1024
    )
    assert utf16.version == utf8.version == 1 and utf16.digest == utf8.digest


def test_ascii_start_then_latin1_later_is_detected_again(
    svc: DatasetService, tmp_path: Path
) -> None:
    rows = b"".join(b"%d,north,plain\n" % i for i in range(10_000))  # > the 64 KiB sample
    data = b"id,region,city\n" + rows + b"10000,south,Montr\xe9al\n"
    v = svc.ingest(PROJECT, "late", _write(tmp_path, "late", data), chunk_bytes=4096)
    assert v.read_options is not None and v.read_options.encoding == "cp1252"
    assert svc.read(v).column("city").to_pylist()[-1] == "Montréal"


def test_mixed_encodings_are_refused_at_the_line(svc: DatasetService, tmp_path: Path) -> None:
    rows = b"".join(b"%d,north\n" % i for i in range(10_000))
    data = "id,city\n0,Zürich\n".encode() + rows + b"7,Montr\xe9al\n"
    with pytest.raises(InvalidInputError, match=r"not valid utf-8 text at line 10003: byte 0xe9"):
        svc.ingest(PROJECT, "mixed", _write(tmp_path, "mixed", data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (PNG, "does not look like CSV text: it holds NUL bytes"),
        (bytes(range(1, 256)) * 8, "does not look like CSV text"),
        (b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(256)) * 2, "does not look like CSV text"),
    ],
    ids=["png", "random-bytes-without-nul", "xlsx-zip"],
)
def test_binary_files_named_csv_are_refused(
    svc: DatasetService, tmp_path: Path, data: bytes, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)) as err:
        svc.ingest(PROJECT, "image", _write(tmp_path, "image", data))
    assert err.value.hint is not None and "CSV UTF-8" in err.value.hint
    assert svc.list_datasets(PROJECT) == []


def test_explicit_encoding_and_delimiter_override_detection(
    svc: DatasetService, tmp_path: Path
) -> None:
    path = _write(tmp_path, "latin", LATIN1)
    v = svc.ingest(PROJECT, "latin", path, encoding="latin-1")
    assert v.read_options is not None and v.read_options.encoding == "iso8859-1"
    assert svc.read(v).column_names == ["income", "région"]
    semi = _write(tmp_path, "semi", b"a;b\n1;2\n")
    one = svc.ingest(PROJECT, "semi", semi, delimiter=",")  # as the user says: one column
    assert svc.read(one).column_names == ["a;b"]
    tab = svc.ingest(PROJECT, "tab", _write(tmp_path, "tab", b"a\tb\n1\t2\n"), delimiter="\\t")
    assert tab.read_options is not None and tab.read_options.delimiter == "\t"


@pytest.mark.parametrize(
    ("data", "options", "message"),
    [
        (LATIN1, {"encoding": "utf-8"}, "is not valid utf-8 text at line 1: byte 0xe9"),
        (b"a,b\n1,2\n", {"encoding": "klingon"}, "Encoding 'klingon' is not a known text"),
        (b"a,b\n1,2\n", {"encoding": "rot13"}, "Encoding 'rot13' is not a known text"),
        (b"a,b\n1,2\n", {"encoding": "utf-16"}, "cannot be read as utf-16 text"),
        (b"a;b\n1;2\n", {"delimiter": "ab"}, "Delimiter 'ab' is not usable"),
        (b"a;b\n1;2\n", {"delimiter": '"'}, "is not usable"),
        (b"a,b\n1,2,3\n", {"delimiter": ","}, "at line 2: Expected 2 columns, got 3"),
    ],
)
def test_wrong_overrides_are_invalid_input(
    svc: DatasetService, tmp_path: Path, data: bytes, options: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(message)) as err:
        svc.ingest(PROJECT, "wrong", _write(tmp_path, "wrong", data), **options)
    assert err.value.hint


@pytest.mark.parametrize("size", [0, 5, (1 << 16) - 1, 1 << 16, 3 << 20])
def test_counting_a_byte_matches_bytes_count(size: int) -> None:
    data = (b'a,"b\nc"\n\xe9\n' * (size // 10 + 1))[:size]
    for byte in (0x0A, 0x22, 0xE9, 0x00):
        assert count_byte(data, byte) == data.count(bytes((byte,)))


def test_a_late_bad_row_is_named_by_its_line_after_quoted_line_breaks(
    svc: DatasetService, tmp_path: Path
) -> None:
    # Small blocks: the bad row's block starts after blocks whose quoted fields span two lines.
    rows = [f'{i},"two\nlines",x' if i < 100 and i % 10 == 0 else f"{i},n,x" for i in range(2000)]
    data = ("id,note,city\n" + "\n".join(rows) + "\n2000,n,x,extra\n").encode()
    with pytest.raises(InvalidInputError, match="at line 2012: Expected 3 columns, got 4"):
        svc.ingest(PROJECT, "late-bad", _write(tmp_path, "late-bad", data), chunk_bytes=4096)


def test_read_options_apply_to_csv_only(svc: DatasetService, tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"a": 1}\n')
    with pytest.raises(InvalidInputError, match="applies to CSV files only, not to jsonl"):
        svc.ingest(PROJECT, "j", jsonl, encoding="utf-8")
    v = svc.ingest(PROJECT, "j", jsonl)
    assert v.read_options is None


# Detection, unit by unit -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("ville,note\nMontréal,déjà vu\nQuébec,très bien à côté\n", "cp1252"),
        ("Name;Straße\nMüller;Hauptstraße\n", "cp1252"),
        ("имя,город\nИван,Москва\nПётр,Санкт-Петербург\n", "cp1251"),  # noqa: RUF001
        ("miasto,opis\nŁódź,żółć\nKraków,ślązak\n", "cp1250"),
    ],
)
def test_code_pages_are_told_apart(text: str, encoding: str) -> None:
    data = text.encode(encoding)
    found = detect_encoding(data, "x", complete=True)
    assert found == encoding and data.decode(found) == text


def test_utf16_without_bom_and_utf8() -> None:
    assert detect_encoding("a,b\n1,é\n".encode("utf-16-le"), "x", complete=True) == "utf-16-le"
    assert detect_encoding("a,b\n1,é\n".encode("utf-16-be"), "x", complete=True) == "utf-16-be"
    cut = "a,é".encode()[:-1]  # the sample ends inside a character: still UTF-8
    assert detect_encoding(cut, "x", complete=False) == "utf-8"


def test_delimiter_detection_respects_quotes_and_partial_samples() -> None:
    assert detect_delimiter('a,b\n"x;y;z",1\n', complete=True) == ","
    assert detect_delimiter("a;b;c\n1;2;3\n4;5", complete=False) == ";"
    assert detect_delimiter("only\n1\n2\n", complete=True) == ","


def test_checks_of_given_options() -> None:
    assert check_encoding("Latin-1") == "iso8859-1"
    assert check_encoding(None) is None
    assert check_delimiter("tab") == "\t"
    with pytest.raises(InvalidInputError, match="not usable"):
        check_delimiter("\n")


# CLI -------------------------------------------------------------------------------------------
@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    def run(*args: str, url: str | None = None) -> tuple[int, str, str]:
        capsys.readouterr()
        where = ["--url", url] if url else ["--home", str(tmp_path / "cli-home")]
        code = main([*where, *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_cli_ingests_latin1_semicolon_and_shows_read_options(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = _write(tmp_path, "semi", "income;région\n1,5;Montréal\n".encode("cp1252"))
    code, out, err = cli("datasets", "ingest", "semi", str(path), "-p", PROJECT)
    assert code == 0, err
    assert "Read as cp1252 text, semicolon-delimited." in out
    code, out, _ = cli("datasets", "show", "semi", "-p", PROJECT)
    assert code == 0 and "Read as cp1252 text, semicolon-delimited." in out and "région" in out
    code, out, _ = cli("datasets", "show", "semi", "-p", PROJECT, "--json")
    assert json.loads(out)["read_options"] == {"encoding": "cp1252", "delimiter": ";"}
    code, out, _ = cli(
        "datasets", "ingest", "given", str(path), "-p", PROJECT,
        "--encoding", "latin-1", "--delimiter", ";", "--json",
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["read_options"] == {"encoding": "iso8859-1", "delimiter": ";"}


@pytest.mark.parametrize(
    ("data", "options", "message", "hint"),
    [
        (PNG, [], "does not look like CSV text", "CSV UTF-8"),
        (LATIN1, ["--encoding", "utf-8"], "at line 1: byte 0xe9", "--encoding cp1252"),
        (b"a,b\n1,2\n", ["--encoding", "nope"], "Encoding 'nope' is not a known", "utf-8"),
        (b"a,b\n1,2\n", ["--delimiter", ";;"], "Delimiter ';;' is not usable", "--delimiter"),
    ],
)
def test_cli_bad_files_exit_2_with_one_error_line(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, data: bytes, options: list[str], message: str, hint: str
) -> None:
    path = _write(tmp_path, "bad", data)
    code, out, err = cli("datasets", "ingest", "bad", str(path), "-p", PROJECT, *options)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert lines[0].startswith("Error: ") and message in lines[0], err
    assert lines[1].startswith("Hint: ") and hint in lines[1], err
    assert len(lines) == 2 and "Traceback" not in err


# A real server: REST, remote SDK and the CLI against it ----------------------------------------
@pytest.mark.parametrize(
    "case", ["latin1_header_and_rows", "utf16_le_bom", "semicolon_decimal_comma"]
)
def test_rest_detects_encoding_and_delimiter(api: httpx.Client, case: str) -> None:
    data, columns, _, encoding, delimiter = CASES[case]
    base = f"{API}/projects/{PROJECT}/datasets/rest-{case.replace('_', '-')}"
    created = api.post(f"{base}/versions", params={"format": "csv"}, content=data, headers=OCTET)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["read_options"] == {"encoding": encoding, "delimiter": delimiter}
    assert [c["name"] for c in body["columns"]] == columns
    assert all(c["type"] != "binary" for c in body["columns"])
    shown = api.get(f"{base}/versions/1").json()
    assert shown["read_options"] == body["read_options"]


def test_rest_overrides_by_query_parameters(api: httpx.Client) -> None:
    base = f"{API}/projects/{PROJECT}/datasets/rest-given/versions"
    created = api.post(
        base,
        params={"format": "csv", "encoding": "latin-1", "delimiter": "\t"},
        content=b"a\tr\xe9gion\n1\tMontr\xe9al\n",
        headers=OCTET,
    )
    assert created.status_code == 201, created.text
    assert created.json()["read_options"] == {"encoding": "iso8859-1", "delimiter": "\t"}


@pytest.mark.parametrize(
    ("params", "content", "message"),
    [
        ({"format": "csv"}, PNG, "does not look like CSV text"),
        ({"format": "csv"}, bytes(range(1, 256)) * 8, "does not look like CSV"),
        ({"format": "csv", "encoding": "utf-8"}, LATIN1, "not valid utf-8 text at line 1"),
        ({"format": "csv", "encoding": "nope"}, b"a\n1\n", "Encoding 'nope' is not a known"),
        ({"format": "csv", "delimiter": "::"}, b"a\n1\n", "Delimiter '::' is not usable"),
        ({"format": "jsonl", "delimiter": ";"}, b'{"a": 1}\n', "applies to CSV files only"),
    ],
)
def test_rest_bad_csv_is_422_with_a_hint(
    api: httpx.Client, params: dict[str, str], content: bytes, message: str
) -> None:
    response = api.post(
        f"{API}/projects/{PROJECT}/datasets/rest-bad/versions",
        params=params,
        content=content,
        headers=OCTET,
    )
    body = assert_error(response, 422, "InvalidInputError", message)
    assert body["hint"]
    assert "home" not in body["message"]  # no server path: the upload is "the uploaded data"


def test_remote_sdk_passes_read_options_through(url: str, tmp_path: Path) -> None:
    path = _write(tmp_path, "latin", LATIN1.replace(b",", b"|"))
    with connect(url) as ml:
        datasets = ml.project(PROJECT).datasets
        detected = datasets.ingest("remote-detected", path)
        assert detected.read_options is not None
        assert (detected.read_options.encoding, detected.read_options.delimiter) == (
            "cp1252",
            "|",
        )
        given = datasets.ingest("remote-given", path, encoding="iso-8859-1", delimiter="|")
        assert given.read_options is not None and given.read_options.encoding == "iso8859-1"
        assert datasets.to_pandas(given)["région"].tolist() == ["Montréal", "Québec"]
        with pytest.raises(InvalidInputError, match="not valid utf-8 text at line 1"):
            datasets.ingest("remote-wrong", path, encoding="utf-8")
        with pytest.raises(InvalidInputError, match="Encoding 'nope' is not a known"):
            datasets.ingest("remote-wrong", path, encoding="nope")  # checked before upload


def test_cli_against_the_server_exits_2_for_a_binary_file(  # type: ignore[no-untyped-def]
    cli, url: str, tmp_path: Path
) -> None:
    path = _write(tmp_path, "photo", PNG)
    code, _, err = cli("datasets", "ingest", "photo", str(path), "-p", PROJECT, url=url)
    assert code == 2 and err.startswith("Error: The uploaded CSV data does not look like CSV")
    good = _write(tmp_path, "good", LATIN1)
    code, out, err = cli("datasets", "ingest", "good", str(good), "-p", PROJECT, url=url)
    assert code == 0 and "Read as cp1252 text, comma-delimited." in out, err
