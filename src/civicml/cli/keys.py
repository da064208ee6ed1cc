"""``civicml keys``: the key-encryption keys that protect the artifact store at rest.

Embedded (on the machine that holds the store and the key directory) or through a server with
``--url`` alike; every command needs the platform permission ``keys.admin`` and every change is
audited (docs/security.md, "Encryption at rest").
"""

from __future__ import annotations

from typing import Annotated

import typer

from civicml.cli._common import JsonOpt, client, console, print_json, table

keys_app = typer.Typer(
    help="Encryption keys of the artifact store: list, rotate, retire, encrypt old artifacts.",
    no_args_is_help=True,
)


@keys_app.command("list")
def list_keys(json_: JsonOpt = False) -> None:
    """Every key-encryption key, which is current, and how many artifacts each protects."""
    with client() as ml:
        report = ml.keys.list()
    if json_:
        print_json(report)
        return
    rows = [(k.key_id, "yes" if k.current else "", k.objects) for k in report.keys]
    rows += [(k, "MISSING", n) for k, n in report.unknown_keys.items()]
    table("Key-encryption keys", ["key", "current", "artifacts"], rows)
    state = "on" if report.encrypt else "off (encrypt_artifacts = false)"
    console.print(
        f"Encryption of new artifacts: {state}; artifacts stored in plaintext: "
        f"{report.plaintext_objects}.",
        markup=False,
    )


@keys_app.command("rotate")
def rotate(json_: JsonOpt = False) -> None:
    """Make a new key current and re-wrap every artifact's data key under it.

    The artifacts' data is not rewritten: only each one's small wrapped-key file is. Artifacts
    still stored in plaintext are encrypted too while encryption is on.
    """
    with client() as ml:
        result = ml.keys.rotate()
    if json_:
        print_json(result)
        return
    console.print(
        f"Key {result.key_id} is current; {result.rewrapped} artifact key(s) re-wrapped, "
        f"{result.encrypted} plaintext artifact(s) encrypted.",
        markup=False,
    )
    if result.previous_key_id:
        console.print(
            f"Retire the previous key with 'civicml keys retire {result.previous_key_id}' once "
            "every process uses the new one.",
            markup=False,
        )


@keys_app.command("retire")
def retire(
    key_id: Annotated[str, typer.Argument(help="The key to destroy (see 'civicml keys list').")],
) -> None:
    """Destroy a key that no artifact uses any more (refused while one does, or if current)."""
    with client() as ml:
        ml.keys.retire(key_id)
    console.print(f"Key {key_id} retired.", markup=False)


@keys_app.command("encrypt-existing")
def encrypt_existing(json_: JsonOpt = False) -> None:
    """Encrypt the artifacts written in plaintext (before encryption was on), in place."""
    with client() as ml:
        converted = ml.keys.encrypt_existing()
    if json_:
        print_json({"encrypted": converted})
        return
    console.print(f"{converted} plaintext artifact(s) encrypted.", markup=False)
