"""Pickled models (script mode, bring-your-own) served from an isolated worker process.

The server never unpickles anything. With the setting ``pickle_models = "sandbox"``, a registered
version whose bundle manifest (``civicml-model.json``) declares format ``civicml.pickle/1`` and
whose registration signature verifies is served by a :class:`SandboxedModel`: its verified files
are copied into a private read-only directory and one worker process per loaded version
(:mod:`civicml.serving._sandbox_worker`, run with ``sys.executable -I -B``) unpickles and predicts
there, after it isolated itself: its own user (``nobody`` when the server runs as root), mount
and network namespaces (no network, every mount read-only), and resource limits
(``sandbox_memory_mb``, ``sandbox_cpu_s``, no file writes, no new processes). Records go in and
predictions come out as length-prefixed JSON on its stdin/stdout. A call that takes longer than
``sandbox_call_timeout_s`` kills the worker (504); a worker that dies answers 502 naming the
signal; the next call starts a fresh worker.

The bundle (``civicml.pickle/1``)::

    {"format": "civicml.pickle/1", "model_file": "model.pkl", "task": "classification",
     "signature": [{"name": "income", "type": "float64", "nullable": false}, ...],
     "classes": [0, 1]}

The unpickled object must have ``predict(DataFrame)`` returning one label (or value) per row;
a classifier may have ``predict_proba(DataFrame)`` with columns in ``classes`` order. The frame
has the signature's columns in the dtypes :func:`~civicml.training._signature.conform` gives.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from civicml.core.errors import CivicMLError, ConfigurationError, InvalidInputError
from civicml.evaluation.models import fetch_version_files
from civicml.registry.schemas import ModelVersion
from civicml.registry.service import RegistryService
from civicml.store.context import Context
from civicml.training._signature import SignatureColumn, conform
from civicml.training.model import (
    MANIFEST_FILE,
    PICKLE_FORMAT,
    PICKLE_MODEL_FILE,
    UnsafeModelFormatError,
)

__all__ = [
    "ModelSandboxError",
    "ModelTimeoutError",
    "SandboxedModel",
    "isolation_problem",
    "load_sandboxed",
]

log = logging.getLogger("civicml.serving.sandbox")

_WORKER = Path(__file__).with_name("_sandbox_worker.py")
_NOBODY = 65534
_MAX_ANSWER = 256 << 20
_START_GRACE_S = 30.0
_ISOLATION_FAILED = 3


class ModelSandboxError(CivicMLError):
    """The sandboxed model failed: it raised, answered something malformed, or its worker died.

    502 (Bad Gateway), as :class:`~civicml.serving.runtime.ModelOutputError`: the caller's input
    was fine, the model was not.
    """

    status = 502


class ModelTimeoutError(ModelSandboxError):
    """The sandboxed model did not answer within ``sandbox_call_timeout_s``; it was killed."""

    status = 504


def load_sandboxed(ctx: Context, mv: ModelVersion, refused: UnsafeModelFormatError) -> Any:
    """The :class:`SandboxedModel` of ``mv``, or ``refused`` raised again.

    ``refused`` is what the in-process loader said. It stands unless ``pickle_models`` is
    ``"sandbox"`` and the bundle is a ``civicml.pickle/1`` bundle.

    Raises:
        UnsafeModelFormatError: The setting is ``"refuse"``, the bundle is another format, or
            the version has no registration signature (422).
        ConflictError: The registration signature does not verify (409).
        ConfigurationError: The worker cannot be isolated on this host.
    """
    if ctx.settings.pickle_models != "sandbox":
        raise refused
    directory = Path(tempfile.mkdtemp(prefix="civicml-sandbox-"))
    try:
        fetch_version_files(ctx, mv, directory)  # every byte checked against the registry
        found = _pickle_manifest(directory)
        if found is None:
            raise refused
        model_dir, manifest = found
        label = f"Model {mv.name} v{mv.version}"
        if RegistryService(ctx).verify_version_signature(mv) != "verified":
            raise UnsafeModelFormatError(
                f"{label} was not loaded: it is a pickle ({PICKLE_FORMAT}) and its files were "
                "not signed at registration; only signed pickles are run, in the sandbox.",
                hint="Register the model files again (registration signs them), approve and "
                "deploy the new version.",
            )
        _read_only(directory)
        return SandboxedModel(ctx, mv, directory, model_dir / PICKLE_MODEL_FILE, manifest)
    except BaseException:
        _remove(directory)
        raise


def _pickle_manifest(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    found = sorted(directory.rglob(MANIFEST_FILE))
    if len(found) != 1:
        return None
    try:
        manifest = json.loads(found[0].read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != PICKLE_FORMAT:
        return None
    problem = _manifest_problem(manifest, found[0].parent)
    if problem is not None:
        raise InvalidInputError(
            f"The {PICKLE_FORMAT} manifest is not valid: {problem}.",
            hint='Write {"format": "civicml.pickle/1", "model_file": "model.pkl", "task": '
            '"classification" or "regression", "signature": [{"name", "type", "nullable"}, ...], '
            '"classes": [...]} beside model.pkl (docs/security.md).',
        )
    return found[0].parent, manifest


def _manifest_problem(manifest: dict[str, Any], folder: Path) -> str | None:
    if manifest.get("model_file") != PICKLE_MODEL_FILE:
        return f"model_file must be {PICKLE_MODEL_FILE!r}"
    if not (folder / PICKLE_MODEL_FILE).is_file():
        return f"{PICKLE_MODEL_FILE} is missing"
    if manifest.get("task") not in ("classification", "regression"):
        return "task must be 'classification' or 'regression'"
    signature = manifest.get("signature")
    types = ("int64", "float64", "string", "bool", "timestamp")
    if (
        not isinstance(signature, list)
        or not signature
        or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and c.get("type") in types
            for c in signature
        )
    ):
        return "signature must be a non-empty list of {name, type, nullable} columns"
    classes = manifest.get("classes", [])
    if not isinstance(classes, list) or (manifest["task"] == "classification" and not classes):
        return "a classifier needs its classes"
    return None


def isolation_problem() -> str | None:
    """Why this host cannot isolate a model worker (``None``: it can). Runs the worker's
    isolation alone, loading nothing: namespaces, read-only mounts, limits, dropping root."""
    try:
        done = subprocess.run(  # noqa: S603 - a fixed command, no shell
            [sys.executable, "-I", "-B", str(_WORKER), "--probe"],
            capture_output=True,
            timeout=30,
            env={"PATH": os.defpath, "LANG": "C.UTF-8"},
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"the worker could not be started ({type(err).__name__})"
    if done.returncode == 0:
        return None
    return done.stderr.decode("utf-8", "replace").strip()[-300:] or f"exit {done.returncode}"


class SandboxedModel:
    """A pickled model that predicts in its own isolated worker process.

    Looks like a :class:`~civicml.training.TabularModel` to the host where it must:
    :attr:`signature`, :attr:`task`, :attr:`classes_`, :meth:`validate`; :meth:`predict_frame`
    answers labels and (when the object has ``predict_proba``) probabilities. It cannot be
    explained: SHAP would need the object in the server.
    """

    def __init__(
        self,
        ctx: Context,
        mv: ModelVersion,
        directory: Path,
        model_file: Path,
        manifest: dict[str, Any],
    ) -> None:
        self.label = f"{mv.name} v{mv.version}"
        self.task: str = manifest["task"]
        self.signature: list[SignatureColumn] = manifest["signature"]
        self.classes_: list[Any] = list(manifest.get("classes") or [])
        self.target: str = str(manifest.get("target", ""))
        self._manifest = json.dumps(
            {"task": self.task, "signature": self.signature, "classes": self.classes_}
        )
        settings = ctx.settings
        self._memory = settings.sandbox_memory_mb << 20
        self._cpu_s = settings.sandbox_cpu_s
        self._timeout_s = settings.sandbox_call_timeout_s
        self._model_file = model_file
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._stop_worker: weakref.finalize[Any, Any] | None = None
        self._finalizer = weakref.finalize(self, _remove, directory)
        with self._lock:
            self._start()  # fails the load when the host cannot isolate it, or unpickling fails

    def __repr__(self) -> str:
        return f"SandboxedModel({self.label!r}, task={self.task!r})"

    def validate(self, data: Any) -> Any:
        """Rows checked against the signature, in the dtypes the worker will see."""
        return conform(data, self.signature)

    def predict_frame(self, frame: Any) -> tuple[list[Any], list[list[float]] | None]:
        """Predictions and probabilities (``None`` without ``predict_proba``) for a validated
        frame, from the worker.

        Raises:
            ModelTimeoutError: No answer within ``sandbox_call_timeout_s`` (the worker is killed).
            ModelSandboxError: The model raised, answered malformed output, or the worker died.
        """
        rows = _rows(frame, self.signature)
        request = json.dumps({"rows": rows}, allow_nan=False).encode("utf-8")
        with self._lock:
            worker = self._worker
            if worker is None or worker.spent(max(self._cpu_s - self._timeout_s, self._cpu_s / 2)):
                if worker is not None:
                    worker.kill()
                worker = self._start()
            answer = self._call(worker, request)
        if not answer.get("ok"):
            raise ModelSandboxError(
                f"Model {self.label} failed in its sandbox: {answer.get('error')}.",
                hint="The input was valid; the model's own code raised. Fix and register the "
                "model again, or switch the endpoint to another version.",
            )
        predictions, probabilities = answer.get("predictions"), answer.get("probabilities")
        if not isinstance(predictions, list) or len(predictions) != len(rows):
            raise self._malformed("predict() did not answer one value per record")
        if probabilities is not None and not (
            isinstance(probabilities, list)
            and len(probabilities) == len(rows)
            and all(isinstance(p, list) and len(p) == len(self.classes_) for p in probabilities)
        ):
            raise self._malformed("predict_proba() did not answer one column per class")
        return predictions, probabilities

    def close(self) -> None:
        """Stop the worker and remove the read-only copy of the files."""
        with self._lock:
            if self._worker is not None:
                self._worker.kill()
                self._worker = None
        self._finalizer()

    def _malformed(self, what: str) -> ModelSandboxError:
        return ModelSandboxError(
            f"Model {self.label} answered malformed output from its sandbox: {what}.",
            hint="Check the pickled object against the contract in docs/security.md.",
        )

    def _start(self) -> _Worker:
        self._worker = None
        worker = _Worker.spawn(self._model_file, self._manifest, self._memory, self._cpu_s)
        if self._stop_worker is not None:
            self._stop_worker.detach()
        self._stop_worker = weakref.finalize(self, worker.kill)
        ready = self._call(worker, None, timeout_s=self._timeout_s + _START_GRACE_S)
        if not ready.get("ok"):
            worker.kill()
            raise ModelSandboxError(
                f"Model {self.label} could not be loaded in its sandbox: {ready.get('error')}.",
                hint="The pickle must unpickle with the libraries installed here and have "
                "predict(DataFrame) (docs/security.md).",
            )
        self._worker = worker
        return worker

    def _call(self, worker: _Worker, request: bytes | None, timeout_s: float | None = None) -> Any:
        limit = self._timeout_s if timeout_s is None else timeout_s
        try:
            return worker.exchange(request, limit)
        except _Timeout:
            worker.kill()
            self._worker = None
            log.error("sandboxed model %s: no answer in %.1f s; worker killed", self.label, limit)
            raise ModelTimeoutError(
                f"Model {self.label} did not answer within {limit:g} s; its sandbox was stopped.",
                hint="The next call starts a fresh worker. Send fewer records, or raise "
                "sandbox_call_timeout_s if the model is slow by design.",
            ) from None
        except _Died as died:
            self._worker = None
            reason = worker.reason()
            log.error("sandboxed model %s: worker ended (%s)", self.label, reason)
            if worker.returncode == _ISOLATION_FAILED:
                raise ConfigurationError(
                    f"Model {self.label} was not loaded: the sandbox cannot be isolated on this "
                    f"host ({worker.stderr_tail() or reason}).",
                    hint="pickle_models = 'sandbox' needs Linux user, mount and network "
                    "namespaces (unshare) for the server's user; set pickle_models = 'refuse' "
                    "or allow them (kernel.unprivileged_userns_clone, container seccomp).",
                ) from died
            raise ModelSandboxError(
                f"Model {self.label} stopped in its sandbox ({reason}); nothing was answered.",
                hint="A worker ends when the model exceeds sandbox_memory_mb or sandbox_cpu_s, "
                "or crashes. The next call starts a fresh worker.",
            ) from died


class _Timeout(Exception):
    pass


class _Died(Exception):
    pass


class _Worker:
    """One worker process and the pipe protocol with it."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.returncode: int | None = None
        #: Set up on the first exchange: both pipes non-blocking, and the poll of them.
        self._poll: select.poll | None = None

    @classmethod
    def spawn(cls, model_file: Path, manifest: str, memory: int, cpu_s: int) -> _Worker:
        env = {
            "PATH": os.defpath,
            "LANG": "C.UTF-8",
            "HOME": str(model_file.parent),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        command = [sys.executable, "-I", "-B", str(_WORKER), str(model_file), manifest]
        command += [str(memory), str(cpu_s)]
        process = subprocess.Popen(  # noqa: S603 - a fixed command, no shell
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=str(model_file.parent),
            close_fds=True,
            start_new_session=True,
        )
        return cls(process)

    def spent(self, budget_s: float) -> bool:
        """Whether the worker used so much CPU that one more call could exceed its limit."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            used = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return False
        return used >= budget_s

    def exchange(self, request: bytes | None, timeout_s: float) -> Any:
        """Send ``request`` (none: just read the ready message) and read one answer."""
        try:
            return json.loads(self.exchange_bytes(request, timeout_s))
        except ValueError:
            return {"ok": False, "error": "the worker answered something that is not JSON"}

    def exchange_bytes(self, request: bytes | None, timeout_s: float) -> bytes:
        """:meth:`exchange`, the answer's bytes as they came (its length prefix removed).

        The request is written at once when the pipe takes it (the usual case: the worker waits
        for it), and the pipes are polled only for the rest and for the answer: the fewest
        system calls, each of which hands the interpreter lock to another thread and back.
        """
        assert self.process.stdin is not None and self.process.stdout is not None  # noqa: S101
        deadline = time.monotonic() + timeout_s
        out = b"" if request is None else struct.pack(">I", len(request)) + request
        stdin, stdout = self.process.stdin.fileno(), self.process.stdout.fileno()
        poll = self._poll
        if poll is None:
            os.set_blocking(stdin, False)
            os.set_blocking(stdout, False)
            poll = self._poll = select.poll()
            poll.register(stdout, select.POLLIN)
        if out:
            out = out[self._write(stdin, out) :]
            if out:
                poll.register(stdin, select.POLLOUT)
        received = bytearray()
        needed: int | None = None
        try:
            while needed is None or len(received) < needed + 4:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _Timeout
                for fd, _ in poll.poll(math.ceil(left * 1000)):
                    if fd == stdin:
                        out = out[self._write(stdin, out) :]
                        if not out:
                            poll.unregister(stdin)
                        continue
                    chunk = os.read(stdout, 1 << 20)
                    if not chunk:
                        raise _Died
                    received += chunk
                    if needed is None and len(received) >= 4:
                        (needed,) = struct.unpack(">I", received[:4])
                        if needed > _MAX_ANSWER:
                            self.kill()
                            raise _Died
        finally:
            if out:
                with contextlib.suppress(KeyError):
                    poll.unregister(stdin)
        return bytes(received[4 : 4 + needed])

    @staticmethod
    def _write(fd: int, data: bytes) -> int:
        """Bytes of ``data`` the pipe took now (0 when it is full)."""
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            raise _Died from None

    def reason(self) -> str:
        """Why the worker ended: its exit signal or status."""
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.returncode
        self.returncode = code
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            why = {"SIGKILL": "killed: memory or CPU limit", "SIGXCPU": "CPU limit reached"}
            return f"signal {name}" + (f", {why[name]}" if name in why else "")
        return f"exit status {code}"

    def stderr_tail(self) -> str:
        if self.process.stderr is None:
            return ""
        with contextlib.suppress(OSError, ValueError):
            os.set_blocking(self.process.stderr.fileno(), False)
            data = self.process.stderr.read() or b""
            lines = data.decode("utf-8", "replace").strip().splitlines()
            return lines[-1][:300] if lines else ""
        return ""

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


def _rows(frame: Any, signature: list[SignatureColumn]) -> list[list[Any]]:
    """The validated frame as JSON values, in signature order (timestamps as ISO strings)."""
    columns = []
    for column in signature:
        values = frame[column["name"]].tolist()
        if column["type"] == "timestamp":
            values = [None if _missing(v) else v.isoformat() for v in values]
        else:
            values = [None if _missing(v) else v for v in values]
        columns.append(values)
    return [list(row) for row in zip(*columns, strict=True)]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return str(value) in ("NaT", "nan", "<NA>") and not isinstance(value, str)


def _read_only(directory: Path) -> None:
    """Dirs read-only and files read-only, readable by the worker's user only: group ``nobody``
    with 0o550/0o440 when the server is root, else the server's own user with 0o500/0o400."""
    root = os.geteuid() == 0
    for path in [*sorted(directory.rglob("*"), reverse=True), directory]:
        is_dir = path.is_dir()
        if root:
            os.chown(path, 0, _NOBODY)
            os.chmod(path, 0o550 if is_dir else 0o440)
        else:
            os.chmod(path, 0o500 if is_dir else 0o400)


def _remove(directory: Path) -> None:
    with contextlib.suppress(OSError):
        for path in [directory, *directory.rglob("*")]:
            if path.is_dir():
                os.chmod(path, 0o700)
    shutil.rmtree(directory, ignore_errors=True)
