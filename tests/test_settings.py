"""Settings precedence (flag > environment > TOML > default) and one-line errors for bad sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsalmonn.memory_store.config import MemoryConfig
from vsalmonn.settings import CATALOG_ENV, DATA_ENV, DEFAULT_DATA_DIR, Settings, SettingsError, load_settings


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "vsalmonn.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_source() -> None:
    settings = load_settings(environ={})
    assert settings.data_dir == DEFAULT_DATA_DIR
    assert settings.memory == MemoryConfig()


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'data_dir = "/srv/data"\n[memory]\nvisual_slots = 4096\noptimizer = "gd"\n')
    settings = load_settings(config=config, environ={})
    assert settings.data_dir == Path("/srv/data")
    assert settings.memory.visual_slots == 4096
    assert settings.memory.optimizer == "gd"
    assert settings.memory.audio_slots == MemoryConfig().audio_slots


def test_environment_overrides_toml(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'data_dir = "/srv/data"\n')
    settings = load_settings(config=config, environ={DATA_ENV: "/from/env"})
    assert settings.data_dir == Path("/from/env")


def test_flag_overrides_environment_and_toml(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'data_dir = "/srv/data"\n')
    settings = load_settings(config=config, data_dir=Path("/from/flag"), environ={DATA_ENV: "/from/env"})
    assert settings.data_dir == Path("/from/flag")


def test_empty_environment_variable_is_unset() -> None:
    assert load_settings(environ={DATA_ENV: ""}).data_dir == DEFAULT_DATA_DIR


def test_relative_data_dir_in_toml_is_relative_to_the_file(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'data_dir = "store"\n')
    assert load_settings(config=config, environ={}).data_dir == tmp_path / "store"


def test_reads_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DATA_ENV, "/from/process")
    assert load_settings().data_dir == Path("/from/process")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("data_dir = ", "invalid TOML"),
        ("[memory]\nvisual_slot = 4\n", "memory.visual_slot: unknown key"),
        ("colour = 1\n", "colour: unknown key"),
        ("[memory]\ndim = 100\n", "memory: Value error, dim 100 is not divisible by heads 8"),
        ('[memory]\npolicy = "lifo"\n', "memory.policy:"),
        ("[memory]\nvisual_slots = 0\nheads = -1\n", "(and 1 more problem)"),
    ],
)
def test_bad_toml_gives_one_line_error(tmp_path: Path, text: str, expected: str) -> None:
    config = write_toml(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(config=config, environ={})
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_missing_file_gives_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(config=tmp_path / "absent.toml", environ={})


def test_settings_are_immutable() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.data_dir = Path("elsewhere")  # type: ignore[misc]


def test_store_table_and_catalog_url_from_the_environment(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        '[store]\ncatalog_url = "sqlite:////srv/a.sqlite"\nretention = { keep_last = 5, max_bytes = 1000 }\n',
    )
    settings = load_settings(config=config, environ={})
    assert settings.store.catalog_url == "sqlite:////srv/a.sqlite"
    assert settings.store.retention.keep_last == 5 and settings.store.retention.max_bytes == 1000
    from_env = load_settings(config=config, environ={CATALOG_ENV: "postgresql+psycopg://x@127.0.0.1/db"})
    assert from_env.store.catalog_url == "postgresql+psycopg://x@127.0.0.1/db"
    assert from_env.store.retention.keep_last == 5


def test_bad_retention_is_one_line(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[store.retention]\nkeep_last = 0\n")
    with pytest.raises(SettingsError, match=r"store\.retention\.keep_last") as err:
        load_settings(config=config, environ={})
    assert "\n" not in str(err.value)
