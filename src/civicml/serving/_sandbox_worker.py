"""The sandboxed model worker: run by path (``python -I .../_sandbox_worker.py``), never imported.

Isolation comes first, with nothing but the standard library loaded: new user, mount and network
namespaces (no network; every mount remounted read-only), resource limits (address space, CPU,
no file writes, few descriptors, no new processes, no core). Only then is the model file read and
unpickled. Anything that cannot be applied ends the worker before the file is opened, with the
reason on stderr (exit 3); the parent refuses to serve the model.

Protocol on stdin/stdout, each message a 4-byte big-endian length and UTF-8 JSON (never pickle):
the worker first answers ``{"ok": true, "proba": bool}`` (or ``{"ok": false, "error": ...}``),
then reads ``{"rows": [[...], ...]}`` (values in signature order, timestamps as ISO strings) and
answers ``{"ok": true, "predictions": [...], "probabilities": [[...]] | null}``.

Arguments: the model file, the manifest's JSON, the address-space limit (bytes), the CPU limit
(seconds).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import struct
import sys
from typing import Any

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_PR_SET_NO_NEW_PRIVS, _NOBODY = 38, 65534
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_KEEP = {
    "ro": _MS_RDONLY,
    "nosuid": _MS_NOSUID,
    "nodev": _MS_NODEV,
    "noexec": _MS_NOEXEC,
    "noatime": _MS_NOATIME,
    "nodiratime": _MS_NODIRATIME,
    "relatime": _MS_RELATIME,
}


class _IsolationError(Exception):
    pass


def _isolate(memory: int, cpu: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    libc.mount.argtypes += [ctypes.c_ulong, ctypes.c_void_p]
    root = os.geteuid() == 0  # root drops to nobody later; others get a user namespace now
    namespaces = _CLONE_NEWNS | _CLONE_NEWNET | (0 if root else _CLONE_NEWUSER)
    if libc.unshare(namespaces) != 0:
        raise _IsolationError(f"unshare(mount, network): {os.strerror(ctypes.get_errno())}")
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        raise _IsolationError(f"making mounts private: {os.strerror(ctypes.get_errno())}")
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        mounts = [line.split() for line in handle]
    for fields in mounts:
        point = fields[4].encode("utf-8", "surrogateescape").decode("unicode_escape")
        options = fields[5].split(",")
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for option in options:
            flags |= _KEEP.get(option, 0)
        if (
            libc.mount(None, point.encode("latin-1"), None, flags, None) != 0
            and "ro" not in options
        ):
            err = os.strerror(ctypes.get_errno())
            raise _IsolationError(f"remounting {point} read-only: {err}")
    limits = [
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NOFILE, 64),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CORE, 0),
    ]
    for which, value in limits:
        resource.setrlimit(which, (value, value))
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _IsolationError(f"no_new_privs: {os.strerror(ctypes.get_errno())}")


def _drop_root() -> None:
    """As root: become ``nobody`` (uid and gid 65534, no groups) for good."""
    if os.geteuid() == 0:
        os.setgroups([])
        os.setresgid(_NOBODY, _NOBODY, _NOBODY)
        os.setresuid(_NOBODY, _NOBODY, _NOBODY)
        if os.geteuid() != _NOBODY or os.getegid() != _NOBODY:
            raise _IsolationError("dropping root to nobody did not take")


def _read(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (size,) = struct.unpack(">I", head)
    return json.loads(stream.read(size))


def _write(stream: Any, message: dict[str, Any]) -> None:
    data = json.dumps(message).encode("utf-8")
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _failure(err: BaseException) -> dict[str, Any]:
    return {"ok": False, "error": f"{type(err).__name__}: {str(err)[:300]}"}


def _probe() -> int:
    """``--probe``: apply the isolation and exit 0, or 3 with the reason (nothing is loaded)."""
    try:
        _isolate(1 << 30, 10)
        _drop_root()
    except (_IsolationError, OSError, ValueError) as err:
        sys.stderr.write(f"civicml sandbox: isolation failed: {err}\n")
        return 3
    return 0


def main() -> int:
    if sys.argv[1:] == ["--probe"]:
        return _probe()
    model_file, manifest_json, memory, cpu = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a model that prints cannot corrupt the protocol
    try:
        _isolate(int(memory), int(cpu))
    except (_IsolationError, OSError, ValueError) as err:
        sys.stderr.write(f"civicml sandbox: isolation failed: {err}\n")
        return 3
    manifest = json.loads(manifest_json)
    signature = manifest["signature"]
    try:
        # Loaded while still able to read every library (a root server's interpreter may live
        # where nobody cannot read); nothing of the model file has been read yet.
        # The codecs a library may look up later (XGBoost decodes its C strings as ASCII): the
        # standard library of a root interpreter may not be readable once this is nobody.
        import encodings.ascii
        import encodings.latin_1
        import encodings.utf_8  # noqa: F401

        import joblib  # type: ignore[import-untyped]  # reads pickle.dump's files and its own
        import sklearn.base  # type: ignore[import-untyped]
        import sklearn.pipeline  # type: ignore[import-untyped]  # noqa: F401

        from civicml.training._signature import conform
    except BaseException as err:
        _write(out, _failure(err))
        return 4
    try:
        _drop_root()
    except (_IsolationError, OSError) as err:
        sys.stderr.write(f"civicml sandbox: isolation failed: {err}\n")
        return 3
    try:
        model = joblib.load(model_file)
        if not callable(getattr(model, "predict", None)):
            raise TypeError("the unpickled object has no predict() method")
        proba = manifest.get("task") == "classification" and callable(
            getattr(model, "predict_proba", None)
        )
    except BaseException as err:  # every failure is reported to the parent
        _write(out, _failure(err))
        return 4
    _write(out, {"ok": True, "proba": proba})
    names = [column["name"] for column in signature]
    while (request := _read(inp)) is not None:
        try:
            frame = conform(
                [dict(zip(names, row, strict=True)) for row in request["rows"]], signature
            )
            predicted = model.predict(frame)
            answer: dict[str, Any] = {
                "ok": True,
                "predictions": predicted.tolist()
                if hasattr(predicted, "tolist")
                else list(predicted),
                "probabilities": model.predict_proba(frame).tolist() if proba else None,
            }
        except BaseException as err:
            answer = _failure(err)
        _write(out, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
