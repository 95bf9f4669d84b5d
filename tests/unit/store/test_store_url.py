"""``RIVERLINE_STORE_URL``: where the offline store is, checked when settings are read."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.errors import ConfigError
from streams.settings import Settings
from streams.store.offline import OfflineStore


def _settings(tmp_path: Path, **overrides: object) -> Settings:
    return Settings.from_env(home=tmp_path / "home", bootstrap=None, **overrides)


def test_the_default_store_is_under_riverline_home(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store_url=None)
    assert settings.store_location == str(tmp_path / "home" / "store")
    assert settings.store_dir == tmp_path / "home" / "store"
    assert OfflineStore.from_settings(settings).root == str(tmp_path / "home" / "store")


def test_an_absolute_path_is_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store_url=str(tmp_path / "shared"))
    assert settings.store_location == str(tmp_path / "shared")
    assert settings.store_dir == tmp_path / "shared"


def test_a_home_relative_path_is_expanded(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store_url="~/riverline-store")
    assert settings.store_location == str(Path.home() / "riverline-store")


def test_a_file_url_is_the_store(tmp_path: Path) -> None:
    url = (tmp_path / "shared store").as_uri()  # a space: percent-encoded in the URL
    settings = _settings(tmp_path, store_url=url)
    assert settings.store_location == url
    assert settings.store_dir == tmp_path / "shared store"
    assert OfflineStore.from_settings(settings).root == str(tmp_path / "shared store")


def test_the_url_reaches_child_processes(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store_url="s3://bucket/riverline")
    assert settings.child_env()["RIVERLINE_STORE_URL"] == "s3://bucket/riverline"


def test_a_remote_store_has_no_local_directory(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store_url="s3://KEY:SECRET@bucket/riverline")
    with pytest.raises(ConfigError, match=r"at s3://bucket/riverline, not in a local") as info:
        _ = settings.store_dir
    assert "SECRET" not in str(info.value)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("ftp://host/store", "has the unknown scheme 'ftp'"),
        ("store", "'store' is a relative path"),
        ("./data/store", "is a relative path"),
        ("file://data/store", "three slashes"),
    ],
)
def test_a_store_url_that_is_no_place_is_refused_saying_what_to_set(
    tmp_path: Path, value: str, problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem) as info:
        _settings(tmp_path, store_url=value)
    assert "Set RIVERLINE_STORE_URL to an absolute path" in str(info.value)
    with pytest.raises(ConfigError, match=problem):
        OfflineStore(value)


def test_an_empty_store_url_means_the_default(tmp_path: Path) -> None:
    assert _settings(tmp_path, store_url="").store_location == str(tmp_path / "home" / "store")


def test_a_url_pyarrow_cannot_open_is_a_config_error_without_credentials(tmp_path: Path) -> None:
    settings = _settings(tmp_path, store_url="s3://KEY:SECRET@bucket/store?nonsense=1")
    with pytest.raises(ConfigError, match="cannot open the offline store at s3://bucket/store: "):
        OfflineStore.from_settings(settings)
    with pytest.raises(ConfigError) as info:
        OfflineStore.from_settings(settings)
    assert "SECRET" not in str(info.value)
    assert "Unexpected query parameter" in str(info.value)
