from __future__ import annotations

from pathlib import Path

import pytest

from civicml.core import ConfigurationError, Settings


def test_defaults_live_under_home(tmp_path: Path) -> None:
    settings = Settings.load(home=tmp_path)
    assert settings.database_url == f"sqlite:///{tmp_path / 'civicml.db'}"
    assert settings.artifacts_root == tmp_path / "artifacts"
    assert settings.audit_key_path == tmp_path / "keys" / "audit-ed25519.pem"


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "civicml.toml").write_text('user = "from-toml"\nrun_heartbeat_timeout_s = 30\n')
    assert Settings.load().user == "from-toml"
    assert Settings.load().run_heartbeat_timeout_s == 30
    monkeypatch.setenv("CIVICML_USER", "from-env")
    assert Settings.load().user == "from-env"
    assert Settings.load(user="explicit").user == "explicit"


def test_unknown_toml_key_fails_with_hint(tmp_path: Path) -> None:
    (tmp_path / "civicml.toml").write_text('databse_url = "sqlite://"\n')
    with pytest.raises(ConfigurationError, match="databse_url") as err:
        Settings.load()
    assert "civicml.toml" in (err.value.hint or "")


def test_wrong_type_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICML_METRICS_FLUSH_INTERVAL_MS", "soon")
    with pytest.raises(ConfigurationError, match="metrics_flush_interval_ms"):
        Settings.load()


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text('user = "configured"\n')
    monkeypatch.setenv("CIVICML_CONFIG", str(other))
    assert Settings.load().user == "configured"


def test_malformed_toml_is_a_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "civicml.toml").write_text("user = \n")
    with pytest.raises(ConfigurationError):
        Settings.load()
