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


# Artifact store URLs -----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["gs://bucket", "az://c/p", "HTTPS://x/y"])
def test_artifact_urls_not_supported_are_refused_at_start(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CIVICML_ARTIFACTS", url)

    with pytest.raises(ConfigurationError, match=r"artifact stores are not supported") as err:
        Settings.load()

    scheme = url.partition(":")[0].lower()
    assert f"artifacts: {url!r}: {scheme}:// artifact stores" in err.value.message
    assert "Value error" not in err.value.message


def test_a_file_url_is_the_directory_it_names(tmp_path: Path) -> None:
    target = tmp_path / "my store"

    settings = Settings.load(artifacts=f"file://{target.as_posix().replace(' ', '%20')}")

    assert settings.artifacts_root == target
    assert Settings.load(artifacts=f"file://localhost{target}").artifacts_root == target


def test_a_file_url_on_another_host_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="is not a local file:// URL"):
        Settings.load(artifacts="file://fileserver/share")


def test_the_cli_refuses_an_unsupported_store_before_writing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from civicml.cli.main import main

    data = tmp_path / "a.csv"
    data.write_text("income,region\n1,north\n")
    monkeypatch.setenv("CIVICML_ARTIFACTS", "gs://bucket/prefix")

    code = main(["datasets", "ingest", "applications", str(data), "-p", "benefits"])

    err = capsys.readouterr().err
    assert code == 2
    assert "gs:// artifact stores are not supported" in err
    assert err.count("Error:") == 1
    assert "Hint:" in err
    assert not (tmp_path / "gs:").exists()


# User names --------------------------------------------------------------------------------------
def test_an_invisible_user_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIVICML_USER", "alice\u200b")

    with pytest.raises(ConfigurationError, match=r"user: The user name .* U\+200B ZERO WIDTH"):
        Settings.load()
