"""Model files are data: TabularModel.load never unpickles; old pickle bundles are converted."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer

from civicml.training import (
    LEGACY_MODEL_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TabularModel,
    UnsafeModelFormatError,
    convert_legacy_bundle,
    fit_tabular,
)
from civicml.training.model import LEGACY_FORMAT, TRUSTED_TYPES
from tests.training.conftest import FAST


class Payload:
    """A pickle that creates ``path`` when it is loaded (the attack from issue 9)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def write_legacy_bundle(model: TabularModel, directory: Path) -> None:
    """A bundle as civicml wrote it before 0.9: ``model.joblib`` and a /1 manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model.pipeline, directory / LEGACY_MODEL_FILE)
    manifest = {**model.manifest(), "format": LEGACY_FORMAT, "model_file": LEGACY_MODEL_FILE}
    manifest["library_versions"] = {
        k: v for k, v in manifest["library_versions"].items() if k != "skops"
    } | {"joblib": joblib.__version__}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any unpickling during the test fails it."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(joblib, "load", refuse)


@pytest.mark.parametrize("algorithm", ["logistic", "random_forest", "lightgbm"])
def test_load_never_unpickles(
    eligibility: pd.DataFrame, tmp_path: Path, algorithm: str, no_pickle: None
) -> None:
    fitted = fit_tabular(eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm])
    fitted.save(tmp_path)

    loaded = TabularModel.load(tmp_path)

    assert not (tmp_path / LEGACY_MODEL_FILE).exists()
    np.testing.assert_array_equal(
        loaded.predict_proba(eligibility), fitted.predict_proba(eligibility)
    )


def test_skops_file_names_only_allowlisted_types(eligibility: pd.DataFrame, tmp_path: Path) -> None:
    fitted = fit_tabular(eligibility, "eligible", algorithm="lightgbm", params=FAST["lightgbm"])
    fitted.save(tmp_path)

    untrusted = skops.io.get_untrusted_types(file=tmp_path / MODEL_FILE)

    assert set(untrusted) <= set(TRUSTED_TYPES)
    assert "civicml.training._preprocess.epoch_seconds" in untrusted


@pytest.mark.parametrize("name", [MODEL_FILE, LEGACY_MODEL_FILE])
def test_a_pickle_is_refused_and_never_run(
    eligibility: pd.DataFrame, tmp_path: Path, name: str
) -> None:
    fitted = fit_tabular(eligibility, "eligible", algorithm="logistic")
    fitted.save(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / MODEL_FILE).unlink()
    (tmp_path / name).write_bytes(pickle.dumps(Payload(marker)))
    if name == LEGACY_MODEL_FILE:  # the manifest of an old bundle
        manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
        manifest.update(format=LEGACY_FORMAT, model_file=LEGACY_MODEL_FILE)
        (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
        match = "is a pickle"
    else:
        match = "is not a skops file"

    with pytest.raises(UnsafeModelFormatError, match=match) as caught:
        TabularModel.load(tmp_path)

    assert caught.value.status == 422
    assert "convert" in (caught.value.hint or "")
    assert not marker.exists()


def test_a_skops_file_naming_other_types_is_refused(
    eligibility: pd.DataFrame, tmp_path: Path
) -> None:
    fitted = fit_tabular(eligibility, "eligible", algorithm="logistic")
    fitted.save(tmp_path)
    hostile = Pipeline([("run", FunctionTransformer(os.getcwd))])
    skops.io.dump(hostile, tmp_path / MODEL_FILE)

    with pytest.raises(UnsafeModelFormatError, match="names type"):
        TabularModel.load(tmp_path)


@pytest.mark.parametrize(
    ("algorithm", "target"),
    [("logistic", "eligible"), ("linear", "monthly_benefit"), ("lightgbm", "eligible")],
)
def test_convert_legacy_bundle(
    applications: pd.DataFrame, tmp_path: Path, algorithm: str, target: str
) -> None:
    other = "monthly_benefit" if target == "eligible" else "eligible"
    frame = applications.drop(columns=[other])
    fitted = fit_tabular(frame, target, algorithm=algorithm, params=FAST[algorithm])
    write_legacy_bundle(fitted, tmp_path)
    with pytest.raises(UnsafeModelFormatError, match="is a pickle"):
        TabularModel.load(tmp_path)

    written = convert_legacy_bundle(tmp_path)

    assert written == [tmp_path / MODEL_FILE, tmp_path / MANIFEST_FILE]
    assert not (tmp_path / LEGACY_MODEL_FILE).exists()
    loaded = TabularModel.load(tmp_path)
    np.testing.assert_array_equal(loaded.predict(frame), fitted.predict(frame))
    if fitted.task == "classification":
        np.testing.assert_array_equal(loaded.predict_proba(frame), fitted.predict_proba(frame))
    assert loaded.metrics == fitted.metrics


@pytest.mark.parametrize(
    ("algorithm", "task"),
    [
        ("logistic", "classification"),
        ("random_forest", "classification"),
        ("lightgbm", "classification"),
        ("linear", "regression"),
        ("random_forest", "regression"),
        ("lightgbm", "regression"),
    ],
)
def test_demo_data_predicts_exactly_as_before_saving(
    tmp_path: Path, algorithm: str, task: str, no_pickle: None
) -> None:
    from civicml.data.samples import benefit_applications

    frame = benefit_applications(800, seed=7)  # what `civicml demo` trains on
    if task == "classification":
        fitted = fit_tabular(frame, "eligible", algorithm=algorithm, params=FAST[algorithm])
    else:
        frame = frame.dropna(subset=["income"]).drop(columns=["eligible"])
        fitted = fit_tabular(frame, "income", algorithm=algorithm, params=FAST[algorithm])
    fitted.save(tmp_path)

    loaded = TabularModel.load(tmp_path)

    if task == "classification":
        np.testing.assert_array_equal(loaded.predict_proba(frame), fitted.predict_proba(frame))
    np.testing.assert_array_equal(loaded.predict(frame), fitted.predict(frame))
