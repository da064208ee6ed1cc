"""Script mode: run your own ``train.py`` in a subprocess, as SageMaker's script mode does.

The script gets what SageMaker gives ``SM_CHANNEL_<NAME>`` / ``SM_MODEL_DIR`` scripts, under
civicml names, and nothing else of the caller's:

- each channel (``{"train": table, "validation": table2}``) as ``channels/<name>/data.parquet``
  in a private temporary directory, its directory in ``CIVICML_CHANNEL_<NAME>``;
- ``CIVICML_MODEL_DIR``, an empty directory: whatever the script writes there becomes the
  model's files; ``CIVICML_OUTPUT_DIR`` for other outputs (plots, reports);
- the hyperparameters as ``--name value`` arguments and as JSON in ``CIVICML_HYPERPARAMETERS``;
  the target column in ``CIVICML_TARGET``, the channel names in ``CIVICML_CHANNELS``;
- a minimal environment (``PATH``, ``LANG``, ``HOME`` = its own working directory,
  ``PYTHONUNBUFFERED``; ``PYTHONPATH`` only when asked): the caller's secrets
  (``CIVICML_TOKEN``, cloud keys) are never passed on.

Why a subprocess with limits rather than an import: the script is the user's code, with its
own libraries and failure modes. It runs in its own process group, with ``RLIMIT_AS``
(``memory_mb``) and ``RLIMIT_CPU`` set before it starts (by a tiny launcher that then
``exec``\\ s the interpreter, so no Python runs between ``fork`` and ``exec``) and a wall-clock
limit that kills the whole group. Its stdout and stderr are merged and read line by line
(``on_line`` sees each one as it comes). A script that exits non-zero, runs out of time or
memory raises :class:`ScriptFailedError` naming which, with the tail of its log; the caller
then stores nothing from the model directory, so no half-written model is ever registered.

When the model directory holds ``model.pkl`` and no ``civicml-model.json``,
:func:`run_script` writes a ``civicml.pickle/1`` manifest beside it (signature from the train
channel's columns minus the target, task and classes from the target), the bundle that
:mod:`civicml.serving.sandbox` serves when ``pickle_models = "sandbox"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from civicml.core.errors import CivicMLError, InvalidInputError
from civicml.costs.meter import current as current_measurement
from civicml.training._signature import infer_signature
from civicml.training.model import MANIFEST_FILE, PICKLE_FORMAT, PICKLE_MODEL_FILE
from civicml.training.tabular import _resolve_task

__all__ = ["ScriptFailedError", "ScriptResult", "run_script"]

LOG_TAIL_LINES = 40
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_OUT_OF_MEMORY = (
    "MemoryError",
    "std::bad_alloc",
    "Cannot allocate memory",
    "out of memory",
    "failed to map segment",
)
_MAX_LOG_BYTES = 16 << 20

# Runs in the chosen interpreter: set the limits, then become the script (argv[3:]).
_LAUNCHER = (
    "import os,resource,sys\n"
    "m,c=int(sys.argv[1]),int(sys.argv[2])\n"
    "resource.setrlimit(resource.RLIMIT_AS,(m,m))\n"
    "resource.setrlimit(resource.RLIMIT_CPU,(c,c+5))\n"
    "os.execv(sys.executable,[sys.executable,*sys.argv[3:]])\n"
)


class ScriptFailedError(CivicMLError):
    """The training script exited non-zero, ran past its time limit or out of memory.

    422: the request was understood; the script the caller brought failed. ``reason`` is
    ``"exit"``, ``"timeout"`` or ``"memory"``; ``log_tail`` holds its last lines.
    """

    status = 422

    def __init__(
        self,
        message: str,
        *,
        reason: Literal["exit", "timeout", "memory"],
        exit_code: int | None,
        log: str,
        hint: str | None = None,
    ) -> None:
        tail = "\n".join(log.splitlines()[-LOG_TAIL_LINES:])
        super().__init__(f"{message}\n--- last lines of its log ---\n{tail}", hint=hint)
        self.reason = reason
        self.exit_code = exit_code
        self.log = log
        self.log_tail = tail


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """What a successful script left: its model and output directories, log and duration."""

    model_dir: Path
    output_dir: Path
    log: str
    exit_code: int
    duration_s: float
    script_sha256: str
    signature: list[dict[str, Any]] = field(default_factory=list)
    manifest_written: bool = False


def run_script(
    script: str | Path,
    channels: Mapping[str, pd.DataFrame | pa.Table],
    *,
    workdir: str | Path,
    target: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    time_limit_s: float = 3600.0,
    memory_mb: int = 4096,
    cpu_s: int | None = None,
    python: str | Path | None = None,
    python_path: list[str | Path] | None = None,
    env: Mapping[str, str] | None = None,
    task: Literal["auto", "classification", "regression"] = "auto",
    signature: list[dict[str, Any]] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> ScriptResult:
    """Run a training script on ``channels`` under limits; return what it wrote.

    Args:
        script: The script file (run as ``python script --name value ...``; its folder is on
            ``sys.path``, so modules beside it import).
        channels: Input data by channel name (``train``, ``validation``, ...), each written as
            ``channels/<name>/data.parquet``.
        workdir: An empty private directory for channels, model, output and the script's own
            working directory; the caller removes it.
        target: The label column, passed as ``CIVICML_TARGET`` and used for the manifest.
        hyperparameters: Passed as ``--name value`` (strings as they are, anything else as
            JSON: ``true``, ``0.5``) and as ``CIVICML_HYPERPARAMETERS``.
        time_limit_s: Wall-clock limit; past it the script's process group is killed.
        memory_mb: Address-space limit (``RLIMIT_AS``) of the script.
        cpu_s: CPU-seconds limit (``RLIMIT_CPU``); default ``time_limit_s`` times the CPU count.
        python: The interpreter (default: the one running civicml).
        python_path: Folders put on ``PYTHONPATH`` (none by default).
        env: Extra environment variables for the script (no ``CIVICML_`` names).
        task: For the manifest of a ``model.pkl``: ``auto`` (from the target), or given.
        signature: For the manifest: input columns (default: inferred from the train channel).
        on_line: Called with each line of the script's output as it comes.

    Returns:
        A :class:`ScriptResult`.

    Raises:
        InvalidInputError: A missing script, a bad channel or hyperparameter name, or limits.
        ScriptFailedError: The script exited non-zero, timed out or ran out of memory.

    Example:
        >>> result = run_script("train.py", {"train": frame}, workdir=tmp,  # doctest: +SKIP
        ...                     target="eligible", hyperparameters={"C": 0.5})
        >>> sorted(p.name for p in result.model_dir.iterdir())  # doctest: +SKIP
        ['civicml-model.json', 'model.pkl']
    """
    source = Path(script).resolve()
    if not source.is_file():
        raise InvalidInputError(
            f"Training script {str(script)!r} is not a file.",
            hint="Pass the path of your train.py.",
        )
    params = dict(hyperparameters or {})
    _check(channels, params, time_limit_s, memory_mb, env)
    root = Path(workdir)
    dirs = {n: root / n for n in ("work", "model", "output")}
    for folder in dirs.values():
        folder.mkdir(parents=True)
    environ = _environment(root, dirs, channels, params, target, python_path, env)
    frames = {name: _write_channel(root, name, data) for name, data in channels.items()}

    interpreter = str(python or sys.executable)
    cpu = cpu_s if cpu_s is not None else int(time_limit_s * (os.cpu_count() or 1)) + 1
    command = [interpreter, "-c", _LAUNCHER, str(memory_mb << 20), str(cpu), "-u", str(source)]
    command += [part for name, value in params.items() for part in (f"--{name}", _arg(value))]
    started = time.monotonic()
    exit_code, timed_out, log = _run(command, dirs["work"], environ, time_limit_s, on_line)
    duration = time.monotonic() - started
    if timed_out:
        raise ScriptFailedError(
            f"Training script {source.name} timed out after {time_limit_s:g} s and was killed.",
            reason="timeout",
            exit_code=exit_code,
            log=log,
            hint="Raise time_limit_s, or train on less data or fewer iterations.",
        )
    if exit_code != 0:
        raise _failure(source.name, exit_code, log, memory_mb)
    columns, wrote = _manifest(dirs["model"], frames.get("train"), target, task, signature)
    return ScriptResult(
        model_dir=dirs["model"],
        output_dir=dirs["output"],
        log=log,
        exit_code=exit_code,
        duration_s=duration,
        script_sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        signature=columns,
        manifest_written=wrote,
    )


def _check(
    channels: Mapping[str, Any],
    params: Mapping[str, Any],
    time_limit_s: float,
    memory_mb: int,
    env: Mapping[str, str] | None,
) -> None:
    for kind, names in (("channel", channels), ("hyperparameter", params)):
        bad = [n for n in names if not isinstance(n, str) or not _NAME.match(n)]
        if bad:
            raise InvalidInputError(
                f"{kind.capitalize()} name {bad[0]!r} is not valid.",
                hint="Use a letter then letters, digits or '_' (at most 64), e.g. 'train'.",
            )
    upper = [n.upper() for n in channels]
    if len(set(upper)) != len(upper):
        raise InvalidInputError(
            f"Channel names {sorted(channels)} differ only in case; their variables would clash.",
        )
    if not time_limit_s > 0 or memory_mb < 64:
        raise InvalidInputError(
            f"Limits time_limit_s={time_limit_s!r}, memory_mb={memory_mb!r} are not valid.",
            hint="time_limit_s must be positive and memory_mb at least 64.",
        )
    civic = [k for k in env or {} if k.upper().startswith("CIVICML_")]
    if civic:
        raise InvalidInputError(
            f"Environment variable {civic[0]!r} cannot be passed to a training script.",
            hint="CIVICML_ variables are set by civicml; pass values as hyperparameters.",
        )


def _environment(
    root: Path,
    dirs: Mapping[str, Path],
    channels: Mapping[str, Any],
    params: Mapping[str, Any],
    target: str | None,
    python_path: list[str | Path] | None,
    extra: Mapping[str, str] | None,
) -> dict[str, str]:
    environ = {
        "PATH": os.environ.get("PATH", os.defpath),
        "LANG": "C.UTF-8",
        "HOME": str(dirs["work"]),
        "TMPDIR": str(dirs["work"]),
        "PYTHONUNBUFFERED": "1",
        **dict(extra or {}),
        "CIVICML_MODEL_DIR": str(dirs["model"]),
        "CIVICML_OUTPUT_DIR": str(dirs["output"]),
        "CIVICML_HYPERPARAMETERS": json.dumps(params, default=str),
        "CIVICML_CHANNELS": json.dumps(sorted(channels)),
    }
    if target is not None:
        environ["CIVICML_TARGET"] = target
    for name in channels:
        environ[f"CIVICML_CHANNEL_{name.upper()}"] = str(root / "channels" / name)
    if python_path:
        environ["PYTHONPATH"] = os.pathsep.join(str(Path(p).resolve()) for p in python_path)
    return environ


def _write_channel(root: Path, name: str, data: pd.DataFrame | pa.Table) -> pd.DataFrame:
    folder = root / "channels" / name
    folder.mkdir(parents=True)
    if isinstance(data, pd.DataFrame):
        frame, table = data, pa.Table.from_pandas(data, preserve_index=False)
    elif isinstance(data, pa.Table):
        frame, table = data.to_pandas(), data
    else:
        raise InvalidInputError(
            f"Channel {name!r} is a {type(data).__name__}; a channel is a table.",
            hint="Pass a pandas DataFrame or a pyarrow Table (cm.train.script takes "
            "dataset versions).",
        )
    pq.write_table(table, folder / "data.parquet")
    return frame


def _arg(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _run(
    command: list[str],
    cwd: Path,
    environ: dict[str, str],
    time_limit_s: float,
    on_line: Callable[[str], None] | None,
) -> tuple[int, bool, str]:
    """Run ``command``; return its exit code, whether it timed out, and its merged log."""
    process = subprocess.Popen(  # noqa: S603 - the caller's interpreter and script, no shell
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=str(cwd),
        env=environ,
        close_fds=True,
        start_new_session=True,
    )
    lines: list[str] = []
    kept = [0]
    stream = process.stdout

    def read() -> None:
        for raw in stream or ():
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if kept[0] < _MAX_LOG_BYTES:
                lines.append(line)
                kept[0] += len(line) + 1
            elif kept[0] != _MAX_LOG_BYTES + 1:
                lines.append(f"[civicml: log truncated after {_MAX_LOG_BYTES >> 20} MiB]")
                kept[0] = _MAX_LOG_BYTES + 1
            if on_line is not None:
                on_line(line)

    reader = threading.Thread(target=read, name="civicml-script-log", daemon=True)
    reader.start()
    # Reaped with wait4, not Popen.wait: its rusage is the script's exact CPU time and peak
    # memory, charged to the work measuring this thread (civicml.costs; GPU use is watched).
    measuring = current_measurement()
    usage: list[Any] = []
    started = time.monotonic()

    def reap() -> None:
        _, status, rusage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        usage.append(rusage)

    waiter = threading.Thread(target=reap, name="civicml-script-wait", daemon=True)
    watch = measuring.watching(process.pid) if measuring else contextlib.nullcontext()
    waiter.start()
    try:
        with watch:
            waiter.join(timeout=time_limit_s)
    finally:
        timed_out = waiter.is_alive()
        _kill_group(process.pid)  # the script's children too, whether it finished or not
        waiter.join()
        reader.join(timeout=10)
        if stream is not None:
            stream.close()
    if measuring is not None and usage:
        measuring.add_subprocess(
            cpu_s=usage[0].ru_utime + usage[0].ru_stime,
            max_rss_bytes=usage[0].ru_maxrss * (1 if sys.platform == "darwin" else 1024),
            wall_s=time.monotonic() - started,
        )
    return int(process.returncode), timed_out, "\n".join(lines)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _failure(name: str, exit_code: int, log: str, memory_mb: int) -> ScriptFailedError:
    tail = log.splitlines()[-LOG_TAIL_LINES:]
    if exit_code in (-signal.SIGKILL, -signal.SIGSEGV) or any(
        marker in line for line in tail for marker in _OUT_OF_MEMORY
    ):
        return ScriptFailedError(
            f"Training script {name} was killed: memory (limit memory_mb={memory_mb}, "
            f"exit code {exit_code}).",
            reason="memory",
            exit_code=exit_code,
            log=log,
            hint="Raise memory_mb, or read less data at a time.",
        )
    if exit_code == -signal.SIGXCPU:
        return ScriptFailedError(
            f"Training script {name} was killed: it used up its CPU time (cpu_s).",
            reason="timeout",
            exit_code=exit_code,
            log=log,
            hint="Raise cpu_s or time_limit_s.",
        )
    return ScriptFailedError(
        f"Training script {name} failed with exit code {exit_code}.",
        reason="exit",
        exit_code=exit_code,
        log=log,
        hint="Fix the error shown in its log, then run it again.",
    )


def _manifest(
    model_dir: Path,
    train: pd.DataFrame | None,
    target: str | None,
    task: str,
    signature: list[dict[str, Any]] | None,
) -> tuple[list[dict[str, Any]], bool]:
    """Write the ``civicml.pickle/1`` manifest of a bare ``model.pkl``; return the signature
    and whether it was written."""
    columns = [dict(c) for c in signature] if signature is not None else []
    if not columns and train is not None:
        features = [c for c in train.columns if c != target]
        columns = [dict(c) for c in infer_signature(train, features)]
    if (model_dir / MANIFEST_FILE).exists() or not (model_dir / PICKLE_MODEL_FILE).is_file():
        return columns, False
    if train is None or target is None or target not in train.columns:
        raise InvalidInputError(
            f"The script wrote {PICKLE_MODEL_FILE} but civicml cannot describe it: "
            "no train channel with the target column.",
            hint=f"Pass a 'train' channel and target=, or write {MANIFEST_FILE} yourself "
            "(docs/script-mode.md).",
        )
    labels = train[target].dropna()
    resolved = _resolve_task(labels, target, task)
    # The order scikit-learn's classes_ (and so predict_proba's columns) has: np.unique's.
    classes = (
        [_plain(v) for v in np.unique(labels.to_numpy())] if resolved == "classification" else []
    )
    manifest = {
        "format": PICKLE_FORMAT,
        "model_file": PICKLE_MODEL_FILE,
        "task": resolved,
        "target": target,
        "signature": columns,
        "classes": classes,
    }
    (model_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return columns, True


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
