"""Script mode: a user's train.py run under limits, recorded on the run, registered and served.

The scripts are real files the tests write; the scikit-learn one trains a Pipeline and saves it
with joblib, as a user's would.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest

import civicml as cm
from civicml.core import InvalidInputError, Settings
from civicml.serving.sandbox import isolation_problem
from civicml.training._signature import conform
from civicml.training.script import ScriptFailedError, run_script

LOGISTIC = "LogisticRegression(C=args.C, max_iter=args.max_iter)"
LIGHTGBM = "lightgbm.LGBMClassifier(n_estimators=20, learning_rate=args.C, verbose=-1)"
XGBOOST = "xgboost.XGBClassifier(n_estimators=20, learning_rate=args.C, max_depth=3, n_jobs=1)"
TRAIN_TEMPLATE = """\
import argparse
import json
import os
import pickle
import sys
from pathlib import Path

import pandas as pd
import lightgbm
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

parser = argparse.ArgumentParser()
parser.add_argument("--C", type=float, default=1.0)
parser.add_argument("--max_iter", type=int, default=100)
args = parser.parse_args()

target = os.environ["CIVICML_TARGET"]
train = pd.read_parquet(Path(os.environ["CIVICML_CHANNEL_TRAIN"]) / "data.parquet")
X, y = train.drop(columns=[target]), train[target]
numeric = X.select_dtypes("number").columns.tolist()
categorical = [c for c in X.columns if c not in numeric]
model = Pipeline([
    ("prep", ColumnTransformer([
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), numeric),
        ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"),
                              OneHotEncoder(handle_unknown="ignore")), categorical),
    ])),
    ("model", ESTIMATOR),
])
model.fit(X, y)
print(f"trained on {len(X)} rows, C={args.C}")
if "CIVICML_CHANNEL_VALIDATION" in os.environ:
    valid = pd.read_parquet(Path(os.environ["CIVICML_CHANNEL_VALIDATION"]) / "data.parquet")
    print(f"validation accuracy {model.score(valid.drop(columns=[target]), valid[target]):.3f}")
with open(Path(os.environ["CIVICML_MODEL_DIR"]) / "model.pkl", "wb") as file:
    pickle.dump(model, file)
seen = {
    "argv": sys.argv[1:],
    "cwd": os.getcwd(),
    "env": sorted(os.environ),
    "hyperparameters": json.loads(os.environ["CIVICML_HYPERPARAMETERS"]),
    "channels": json.loads(os.environ["CIVICML_CHANNELS"]),
}
(Path(os.environ["CIVICML_OUTPUT_DIR"]) / "seen.json").write_text(json.dumps(seen))
"""
TRAIN_PY = TRAIN_TEMPLATE.replace("ESTIMATOR", LOGISTIC)


def write(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(code))
    return path


def applications(rows: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = rng.normal(30_000, 9_000, rows).round(2)
    household = rng.integers(1, 7, rows)
    region = rng.choice(["north", "south", "east", "west"], rows)
    eligible = (income / household < 9_000) ^ (rng.random(rows) < 0.05)
    return pd.DataFrame(
        {"income": income, "household_size": household, "region": region, "eligible": eligible}
    )


@pytest.fixture
def ml(tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = Settings.load(home=tmp_path / "emb", pickle_models="sandbox")
    client = cm.connect(settings=settings)
    yield client
    client.close()


def artifacts(run: Any) -> set[str]:
    return {a.path for a in run.list_artifacts()}


# run_script: the library -----------------------------------------------------------------------
def test_the_script_gets_channels_hyperparameters_and_its_own_directories(tmp_path: Path) -> None:
    script = write(tmp_path, "train.py", TRAIN_PY)
    frame = applications()
    lines: list[str] = []

    result = run_script(
        script,
        {"train": frame, "validation": applications(100, seed=4)},
        workdir=tmp_path / "job",
        target="eligible",
        hyperparameters={"C": 0.5, "max_iter": 200},
        memory_mb=2048,
        on_line=lines.append,
    )

    seen = json.loads((result.output_dir / "seen.json").read_text())
    assert seen["argv"] == ["--C", "0.5", "--max_iter", "200"]
    assert seen["hyperparameters"] == {"C": 0.5, "max_iter": 200}
    assert seen["channels"] == ["train", "validation"]
    assert seen["cwd"] == str(tmp_path / "job" / "work")
    assert (tmp_path / "job" / "channels" / "train" / "data.parquet").is_file()
    assert lines[0] == "trained on 400 rows, C=0.5"
    assert lines[1].startswith("validation accuracy ")
    assert result.log == "\n".join(lines)
    assert sorted(p.name for p in result.model_dir.iterdir()) == ["civicml-model.json", "model.pkl"]
    manifest = json.loads((result.model_dir / "civicml-model.json").read_text())
    assert manifest["format"] == "civicml.pickle/1"
    assert manifest["task"] == "classification"
    assert manifest["classes"] == [False, True]
    assert [c["name"] for c in manifest["signature"]] == ["income", "household_size", "region"]


def test_the_callers_secrets_are_not_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICML_TOKEN", "cml_s3cr3t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-key")
    script = write(
        tmp_path,
        "env.py",
        """
        import os
        print(sorted(os.environ))
        print("s3cr3t" in repr(os.environ))
        """,
    )

    result = run_script(script, {"train": applications(10)}, workdir=tmp_path / "job")

    names = eval(result.log.splitlines()[0])  # noqa: S307 - the list the script printed
    assert "CIVICML_TOKEN" not in names and "AWS_SECRET_ACCESS_KEY" not in names
    assert {"CIVICML_CHANNEL_TRAIN", "CIVICML_MODEL_DIR", "HOME", "PATH"} <= set(names)
    assert "PYTHONPATH" not in names
    assert result.log.splitlines()[1] == "False"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": {"train data": None}}, "Channel name 'train data' is not valid."),
        ({"hyperparameters": {"--C": 1}}, "Hyperparameter name '--C' is not valid."),
        ({"env": {"CIVICML_TOKEN": "x"}}, "'CIVICML_TOKEN' cannot be passed"),
        ({"memory_mb": 10}, "memory_mb=10"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    script = write(tmp_path, "train.py", "raise SystemExit('must not run')\n")
    channels = kwargs.pop("channels", {"train": applications(10)})
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        run_script(script, channels, workdir=tmp_path / "job", **kwargs)
    assert not (tmp_path / "job").exists()


# cm.train.script: recorded on the run ------------------------------------------------------
@pytest.mark.parametrize(
    "estimator", [LOGISTIC, LIGHTGBM, XGBOOST], ids=["sklearn", "lightgbm", "xgboost"]
)
def test_a_script_model_is_recorded_registered_and_served_from_the_sandbox(
    ml: Any, tmp_path: Path, estimator: str
) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", applications())
    code = TRAIN_TEMPLATE.replace("ESTIMATOR", estimator)
    if estimator == XGBOOST:  # XGBoost's scikit-learn API in the same Pipeline
        code = code.replace("import lightgbm\n", "import lightgbm\nimport xgboost\n")
        assert "import xgboost" in code
    if estimator == LIGHTGBM:  # saved with joblib.dump, as many scripts do: served all the same
        code = code.replace(
            'with open(Path(os.environ["CIVICML_MODEL_DIR"]) / "model.pkl", "wb") as file:\n'
            "    pickle.dump(model, file)",
            "import joblib\n"
            'joblib.dump(model, Path(os.environ["CIVICML_MODEL_DIR"]) / "model.pkl")',
        )
        assert "joblib.dump" in code
    script = write(tmp_path, "train.py", code)

    with proj.start_run(experiment="byo") as run:
        trained = cm.train.script(
            script,
            {"train": raw},
            target="eligible",
            hyperparameters={"C": 0.5},
            memory_mb=2048,
            run=run,
        )

    info = run.info
    assert info.status.value == "finished"
    assert info.params["hp.C"] == "0.5"
    assert info.params["channel.train"] == "applications@v1"
    assert info.tags["script.exit_code"] == "0"
    assert {
        "code/train.py",
        "logs/train.log",
        "model/model.pkl",
        "model/civicml-model.json",
        "output/seen.json",
    } <= artifacts(run)
    assert run.read_artifact("logs/train.log").decode() == "trained on 400 rows, C=0.5"
    assert sorted(trained.files) == ["model/civicml-model.json", "model/model.pkl"]

    mv = proj.models.register("eligibility-byo", trained, run=run)
    assert [c.name for c in mv.signature or []] == ["income", "household_size", "region"]
    problem = isolation_problem()
    if problem is not None:
        pytest.skip(f"this host cannot isolate a model worker: {problem}")
    reviewer = Settings.load(home=tmp_path / "emb", user="reviewer", pickle_models="sandbox")
    with cm.connect(settings=reviewer) as rv:
        mv = rv.project("benefits").models.approve(mv, note="reviewed")
    endpoint = proj.endpoints.deploy("byo", mv)
    rows = applications(20, seed=9).drop(columns=["eligible"])
    result = endpoint.predict(rows.to_dict("records"))

    model = _model_of(run, tmp_path)
    frame = conform(rows, [dict(c) for c in trained.input_signature])
    assert result.predictions == model.predict(frame).tolist()
    np.testing.assert_allclose(result.probabilities, model.predict_proba(frame), rtol=1e-9)
    assert result.classes == [False, True]


def _model_of(run: Any, tmp_path: Path) -> Any:
    """The script's model as the test sees it: the file it wrote (pickle or joblib), from the
    run's artifacts."""
    path = tmp_path / "model-as-written.pkl"
    path.write_bytes(run.read_artifact("model/model.pkl"))
    return joblib.load(path)  # the test's own model file


FAILING = """
import sys
from pathlib import Path
import os
for i in range(60):
    print(f"epoch {i}")
(Path(os.environ["CIVICML_MODEL_DIR"]) / "model.pkl").write_bytes(b"half-written")
print("ValueError: the data has no rows of class 1", file=sys.stderr)
sys.exit(3)
"""


def test_a_failing_script_fails_the_run_with_its_log_and_no_model(ml: Any, tmp_path: Path) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", applications(50))
    script = write(tmp_path, "train.py", FAILING)

    with (
        pytest.raises(ScriptFailedError, match="failed with exit code 3") as caught,
        proj.start_run() as run,
    ):
        cm.train.script(script, raw, target="eligible", run=run)

    err = caught.value
    assert err.reason == "exit" and err.exit_code == 3 and err.status == 422
    assert err.log_tail.splitlines()[-1] == "ValueError: the data has no rows of class 1"
    assert len(err.log_tail.splitlines()) == 40
    assert "epoch 59" in str(err) and "epoch 0\n" not in str(err)
    assert run.info.status.value == "failed"
    assert run.info.tags["script.exit_code"] == "3"
    stored = artifacts(run)
    assert "logs/train.log" in stored
    assert not [p for p in stored if p.startswith("model/")]
    assert run.read_artifact("logs/train.log").decode().startswith("epoch 0\n")


def test_a_hanging_script_is_killed_at_its_time_limit(tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "hang.py",
        """
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"child {child.pid}", flush=True)
        time.sleep(600)
        """,
    )

    with pytest.raises(ScriptFailedError, match=r"timed out after 2 s and was killed") as caught:
        run_script(script, {"train": applications(10)}, workdir=tmp_path / "job", time_limit_s=2)

    assert caught.value.reason == "timeout"
    child = int(caught.value.log.split()[1])
    assert _gone(child)  # the whole process group was killed, not only the script


def _gone(pid: int) -> bool:
    """Whether ``pid`` is dead (gone, or a zombie) within 10 s of SIGKILL reaching it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


def test_a_memory_hog_is_stopped_at_its_memory_limit(ml: Any, tmp_path: Path) -> None:
    proj = ml.project("benefits")
    raw = proj.datasets.ingest("applications", applications(50))
    script = write(
        tmp_path,
        "hog.py",
        """
        import os
        from pathlib import Path
        print("allocating")
        (Path(os.environ["CIVICML_MODEL_DIR"]) / "model.pkl").write_bytes(b"partial")
        hog = bytearray(2 * 1024 ** 3)
        """,
    )

    with (
        pytest.raises(ScriptFailedError, match=r"was killed: memory \(limit memory_mb=256") as err,
        proj.start_run() as run,
    ):
        cm.train.script(script, {"train": raw}, memory_mb=256, run=run)

    assert err.value.reason == "memory"
    assert "MemoryError" in err.value.log_tail
    assert run.info.status.value == "failed"
    assert not [p for p in artifacts(run) if p.startswith("model/")]


def test_a_script_that_writes_model_pkl_without_a_target_is_refused(tmp_path: Path) -> None:
    script = write(
        tmp_path,
        "train.py",
        """
        import os
        from pathlib import Path
        (Path(os.environ["CIVICML_MODEL_DIR"]) / "model.pkl").write_bytes(b"x")
        """,
    )
    with pytest.raises(InvalidInputError, match="civicml cannot describe it"):
        run_script(script, {"train": applications(10)}, workdir=tmp_path / "job")


def test_the_interpreter_can_be_chosen(tmp_path: Path) -> None:
    script = write(tmp_path, "which.py", "import sys; print(sys.executable)\n")
    result = run_script(script, {}, workdir=tmp_path / "job", python=sys.executable)
    assert result.log == sys.executable
    assert result.signature == [] and not result.manifest_written
