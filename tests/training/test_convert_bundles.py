"""Converting stored pre-0.9 bundles (model.joblib pickles) in a real store, then loading them
without pickle (civicml.evaluation.models.convert_model_bundles; migration 0009 marks it)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from civicml.core import Principal
from civicml.evaluation.models import convert_model_bundles, load_tabular_model
from civicml.governance import AuditTrail, ProjectService
from civicml.registry import RegistryService
from civicml.store import Context
from civicml.training import (
    LEGACY_MODEL_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    TabularModel,
    UnsafeModelFormatError,
    fit_tabular,
)
from tests.training.conftest import FAST
from tests.training.test_model_files import write_legacy_bundle

PROJECT = "benefits"


def _register_legacy(ctx: Context, model: TabularModel, directory: Path, name: str) -> str:
    """Store an old-format bundle and register it, as civicml before 0.9 did."""
    write_legacy_bundle(model, directory)
    files = {
        f"model/{p.name}": ctx.artifacts.put_file(p).digest for p in sorted(directory.iterdir())
    }
    trainer = RegistryService(ctx.as_principal(Principal(user="trainer")))
    return trainer.register(PROJECT, name, artifacts=files).id


def test_old_bundles_are_converted_once_and_load_without_pickle(
    ctx: Context, eligibility: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    fitted = {
        algorithm: fit_tabular(eligibility, "eligible", algorithm=algorithm, params=FAST[algorithm])
        for algorithm in ("logistic", "random_forest", "lightgbm")
    }
    for algorithm, model in fitted.items():
        _register_legacy(ctx, model, tmp_path / algorithm, algorithm)
    registry = RegistryService(ctx)
    old = {a: registry.get_version(PROJECT, a, 1) for a in fitted}
    with pytest.raises(UnsafeModelFormatError, match=r"logistic v1 was not loaded: .* pickle"):
        load_tabular_model(ctx, old["logistic"])

    report = convert_model_bundles(ctx)

    assert sorted(report.converted) == [f"{PROJECT}/{a} v1" for a in sorted(fitted)]
    assert report.failed == []
    monkeypatch.setattr(pickle, "loads", None)  # nothing below may unpickle
    monkeypatch.setattr(pickle, "load", None)
    monkeypatch.setattr(joblib, "load", None)
    for algorithm, model in fitted.items():
        mv = registry.get_version(PROJECT, algorithm, 1)
        assert mv.artifact_digest != old[algorithm].artifact_digest
        files = registry.get_manifest(mv)["files"]
        assert set(files) == {f"model/{MODEL_FILE}", f"model/{MANIFEST_FILE}"}
        loaded = load_tabular_model(ctx, mv)
        np.testing.assert_array_equal(
            loaded.predict_proba(eligibility), model.predict_proba(eligibility)
        )
        events = AuditTrail(ctx).list(entity_id=mv.id, action="model_version.files_converted")
        assert len(events) == 1
        assert events[0].before and events[0].after
        assert events[0].before["artifact_digest"] == old[algorithm].artifact_digest
        assert events[0].after["artifact_digest"] == mv.artifact_digest
        assert ctx.artifacts.exists(old[algorithm].artifact_digest)  # the old bytes are kept
    again = convert_model_bundles(ctx)
    assert (again.converted, again.failed) == ([], [])


def test_a_bundle_that_does_not_match_the_registry_is_never_unpickled(
    ctx: Context, eligibility: pd.DataFrame, tmp_path: Path
) -> None:
    ProjectService(ctx).ensure(PROJECT, "projects.read")
    model = fit_tabular(eligibility, "eligible", algorithm="logistic")
    _register_legacy(ctx, model, tmp_path / "m", "tampered")
    mv = RegistryService(ctx).get_version(PROJECT, "tampered", 1)
    digest = RegistryService(ctx).get_manifest(mv)["files"][f"model/{LEGACY_MODEL_FILE}"]["digest"]
    from tests.serving.helpers import tamper

    tamper(ctx, digest)

    report = convert_model_bundles(ctx)

    assert report.converted == []
    assert [label for label, _why in report.failed] == [f"{PROJECT}/tampered v1"]
    assert RegistryService(ctx).get_version(PROJECT, "tampered", 1).artifact_digest == (
        mv.artifact_digest
    )


def test_civicml_models_convert(
    ctx: Context,
    eligibility: pd.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from civicml.cli.main import main

    ProjectService(ctx).ensure(PROJECT, "projects.read")
    model = fit_tabular(eligibility, "eligible", algorithm="logistic")
    _register_legacy(ctx, model, tmp_path / "m", "old")
    home = str(ctx.settings.home)

    assert main(["--home", home, "models", "convert", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"converted": [f"{PROJECT}/old v1"], "failed": {}}
    assert main(["--home", home, "models", "convert"]) == 0
    assert "Nothing to convert" in capsys.readouterr().out
    loaded = load_tabular_model(ctx, RegistryService(ctx).get_version(PROJECT, "old", 1))
    np.testing.assert_array_equal(loaded.predict(eligibility), model.predict(eligibility))
    assert main(["--home", home, "--url", "http://127.0.0.1:9", "models", "convert"]) == 2
    assert "not through a server" in capsys.readouterr().err
