"""``civicml keys``: the key-encryption keys that protect the artifact store at rest.

These commands run on the machine that holds the artifact store and the key directory (like
``civicml server``), with the same settings; they never talk to a remote server.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from civicml.cli._common import STATE, JsonOpt, console, print_json, table

if TYPE_CHECKING:
    from civicml.store.artifacts import LocalArtifactStore

keys_app = typer.Typer(
    help="Encryption keys of the artifact store: list, rotate, retire, encrypt old artifacts.",
    no_args_is_help=True,
)


def _store() -> LocalArtifactStore:
    from civicml.core.errors import ConfigurationError
    from civicml.core.settings import Settings
    from civicml.store.artifacts import artifact_store_for

    settings = Settings.load(home=STATE.home, url=STATE.url, user=STATE.user)
    if settings.url:
        raise ConfigurationError(
            "'civicml keys' works on the local artifact store, not through a server URL.",
            hint="Run it on the server's machine with the server's settings (without --url / "
            "CIVICML_URL).",
        )
    return artifact_store_for(settings)


@keys_app.command("list")
def list_keys(json_: JsonOpt = False) -> None:
    """Every key-encryption key, which is current, and how many artifacts each protects."""
    report = _store().key_report()
    if json_:
        print_json(dataclasses.asdict(report))
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
    result = _store().rotate_keys()
    if json_:
        print_json(dataclasses.asdict(result))
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
    _store().retire_key(key_id)
    console.print(f"Key {key_id} retired.", markup=False)


@keys_app.command("encrypt-existing")
def encrypt_existing(json_: JsonOpt = False) -> None:
    """Encrypt the artifacts written in plaintext (before encryption was on), in place."""
    converted = _store().encrypt_existing()
    if json_:
        print_json({"encrypted": converted})
        return
    console.print(f"{converted} plaintext artifact(s) encrypted.", markup=False)
