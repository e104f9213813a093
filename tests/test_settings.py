"""Settings precedence (flag > environment > TOML > default), every setting from the environment, one-line
errors naming the file or variable, did-you-mean for misspelt keys, secrets kept secret, and provenance."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from vsalmonn.memory_store.config import MemoryConfig
from vsalmonn.settings import (
    CATALOG_ENV,
    CONFIG_ENV,
    DATA_ENV,
    DEFAULT_DATA_DIR,
    Settings,
    SettingsError,
    describe_settings,
    load_settings,
)


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


# --- every setting from the environment ---------------------------------------------------------------------


def test_every_setting_from_the_environment_nested_with_double_underscores(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "[memory]\nvisual_slots = 4096\naudio_slots = 512\n")
    env = {
        "VSALMONN_MEMORY__AUDIO_SLOTS": "256",
        "VSALMONN_STORE__CATALOG_URL": "sqlite:////srv/env.sqlite",
        "VSALMONN_STORE__DATA_RETENTION__LABELS__MAX_AGE_S": "86400",
        "VSALMONN_DATA_DIR": "/from/env",
        "VSALMONN_AGENT__STEP_LIMIT": "3",
        "VSALMONN_PERCEPTION__LANGUAGE": "de",
        "VSALMONN_PLUGINS__ENABLED": '["surveillance", "meeting_monitor"]',
        "VSALMONN_PLUGINS__SETTINGS__SURVEILLANCE__COOLDOWN_S": "5",
    }
    settings = load_settings(config=config, environ=env)
    assert settings.memory.visual_slots == 4096  # the file's, where the environment says nothing
    assert settings.memory.audio_slots == 256  # the environment wins over the file, key by key
    assert settings.store.catalog_url == "sqlite:////srv/env.sqlite"
    assert settings.store.data_retention.labels.max_age_s == 86400.0
    assert settings.store.data_retention.labels.max_bytes == 256_000_000  # its sibling keeps its default
    assert settings.data_dir == Path("/from/env")
    assert settings.agent.step_limit == 3
    assert settings.perception.language == "de"
    assert settings.plugins.enabled == ["surveillance", "meeting_monitor"]
    assert settings.plugins.settings == {"surveillance": {"cooldown_s": "5"}}  # the plugin's model parses it


def test_tables_and_lists_from_the_environment_as_json() -> None:
    env = {
        "VSALMONN_STREAMS": '[{"name": "gate", "source": "rtsp://10.0.0.7/s"}]',
        "VSALMONN_STORE__RETENTION": '{"keep_last": 7}',
    }
    settings = load_settings(environ=env)
    assert [(s.name, s.source) for s in settings.streams] == [("gate", "rtsp://10.0.0.7/s")]
    assert settings.store.retention.keep_last == 7


def test_older_environment_names_still_work_and_lose_to_the_new_ones() -> None:
    old = {DATA_ENV: "/old/data", CATALOG_ENV: "sqlite:////old.sqlite"}
    assert load_settings(environ=old).data_dir == Path("/old/data")
    assert load_settings(environ=old).store.catalog_url == "sqlite:////old.sqlite"
    both = {**old, "VSALMONN_DATA_DIR": "/new/data", "VSALMONN_STORE__CATALOG_URL": "sqlite:////new.sqlite"}
    settings = load_settings(environ=both)
    assert settings.data_dir == Path("/new/data")
    assert settings.store.catalog_url == "sqlite:////new.sqlite"


def test_flag_wins_over_every_environment_name(tmp_path: Path) -> None:
    env = {DATA_ENV: "/old", "VSALMONN_DATA_DIR": "/new"}
    assert load_settings(data_dir=tmp_path / "flag", environ=env).data_dir == tmp_path / "flag"


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    config = write_toml(tmp_path, 'data_dir = "rel"\n[memory]\nvisual_slots = 2048\n')
    settings = load_settings(environ={CONFIG_ENV: str(config)})
    assert settings.memory.visual_slots == 2048
    assert settings.data_dir == tmp_path / "rel"  # still relative to the file's folder
    (tmp_path / "other").mkdir()
    other = write_toml(tmp_path / "other", "")  # --config wins over VSALMONN_CONFIG
    assert load_settings(config=other, environ={CONFIG_ENV: str(config)}).memory.visual_slots == 16384
    with pytest.raises(SettingsError, match=r"^VSALMONN_CONFIG: config file not found: .*absent\.toml$"):
        load_settings(environ={CONFIG_ENV: str(tmp_path / "absent.toml")})


def test_a_given_environ_mapping_is_the_only_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSALMONN_MEMORY__VISUAL_SLOTS", "64")
    monkeypatch.setenv("VSALMONN_MEMORY__VISUL_SLOTS", "64")  # would be an error, were it read
    assert load_settings(environ={}).memory.visual_slots == 16384
    monkeypatch.delenv("VSALMONN_MEMORY__VISUL_SLOTS")
    assert load_settings().memory.visual_slots == 64


def test_settings_built_in_code_read_no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSALMONN_MEMORY__VISUAL_SLOTS", "64")
    monkeypatch.setenv(DATA_ENV, "/from/process")
    assert Settings().memory.visual_slots == 16384
    assert Settings(data_dir=Path("x")).data_dir == Path("x")


def test_other_programs_vsalmonn_variables_are_left_alone() -> None:
    env = {"VSALMONN_BENCH_NEEDLE_LENGTHS": "60,120", "VSALMONN_PG_BINDIR": "/usr/lib/postgresql/bin"}
    assert load_settings(environ=env) == load_settings(environ={})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"VSALMONN_MEMORY__VISUAL_SLOTS": "many"},
            "VSALMONN_MEMORY__VISUAL_SLOTS: memory.visual_slots: Input should be a valid integer",
        ),
        ({"VSALMONN_MEMORY__HEADS": "7"}, "VSALMONN_MEMORY__HEADS: memory: Value error, dim 384"),
        (
            {"VSALMONN_STORE__RETENTION__KEEP_LAST": "0"},
            "VSALMONN_STORE__RETENTION__KEEP_LAST: store.retention",
        ),
        ({"VSALMONN_MEMORY": "4096"}, "VSALMONN_MEMORY: memory is a table: give it as JSON"),
        ({"VSALMONN_STREAMS": "[{"}, "VSALMONN_STREAMS: streams is a list: give it as JSON"),
        ({"VSALMONN_STREAMS": '[{"name": "a"}]'}, "VSALMONN_STREAMS: streams.0.source: Field required"),
        (
            {"VSALMONN_STREAMS__0__NAME": "a"},
            "VSALMONN_STREAMS__0__NAME: streams is a list: set it whole, as JSON in VSALMONN_STREAMS",
        ),
        ({"VSALMONN_MEMORY__DIM__X": "1"}, "VSALMONN_MEMORY__DIM__X: memory.dim is a value"),
        ({"VSALMONN_MEMORY____DIM": "1"}, "VSALMONN_MEMORY____DIM: empty key"),
        (
            {"VSALMONN_PLUGINS__SINKS": '{"*": [{"type": "webhook", "url": "ftp://x"}]}'},
            "VSALMONN_PLUGINS__SINKS: plugins.sinks.*.0.webhook.url: String should match pattern",
        ),
    ],
)
def test_bad_environment_value_is_one_line_naming_the_variable(env: dict[str, str], expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ=env)
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


# --- did you mean -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[memory]\nvisul_slots = 4\n", "memory.visul_slots: unknown key (did you mean 'visual_slots'?)"),
        ("[memroy]\ndim = 64\n", "memroy: unknown key (did you mean 'memory'?)"),
        ("data_dri = 'x'\n", "data_dri: unknown key (did you mean 'data_dir'?)"),
        (
            "[store.data_retention.labels]\nmax_age = 5\n",
            "store.data_retention.labels.max_age: unknown key (did you mean 'max_age_s'?)",
        ),
        (
            '[[streams]]\nname = "a"\nsource = "b.mp4"\nkidn = "file"\n',
            "streams.0.kidn: unknown key (did you mean 'kind'?)",
        ),
        (
            '[[plugins.sinks."*"]]\ntype = "webhook"\nurl = "http://x/h"\nsecrte = "k"\n',
            "plugins.sinks.*.0.webhook.secrte: unknown key (did you mean 'secret'?)",
        ),
        ("[memory]\nzzzzzz = 1\n", "memory.zzzzzz: unknown key"),
    ],
)
def test_misspelt_key_in_the_file_gets_a_suggestion(tmp_path: Path, text: str, expected: str) -> None:
    config = write_toml(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(config=config, environ={})
    assert str(info.value) == f"{config}: {expected}"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "VSALMONN_MEMORY__VISUL_SLOTS",
            "VSALMONN_MEMORY__VISUL_SLOTS: memory.visul_slots: unknown key "
            "(did you mean VSALMONN_MEMORY__VISUAL_SLOTS?)",
        ),
        (
            "VSALMONN_MEMROY__DIM",
            "VSALMONN_MEMROY__DIM: memroy: unknown key (did you mean VSALMONN_MEMORY__DIM?)",
        ),
        ("VSALMONN_DATADIR", "VSALMONN_DATADIR: names no setting (did you mean VSALMONN_DATA_DIR?)"),
        (
            "VSALMONN_STORE__DATA_RETENTION__LABLES__MAX_AGE_S",
            "VSALMONN_STORE__DATA_RETENTION__LABLES__MAX_AGE_S: store.data_retention.lables: unknown key "
            "(did you mean VSALMONN_STORE__DATA_RETENTION__LABELS__MAX_AGE_S?)",
        ),
        ("VSALMONN_MEMORY__ZZZZZZ", "VSALMONN_MEMORY__ZZZZZZ: memory.zzzzzz: unknown key"),
        ("VSALMONN_NOSUCH__KEY", "VSALMONN_NOSUCH__KEY: nosuch: unknown key"),
        ("vsalmonn_memory__visul_slots", "vsalmonn_memory__visul_slots: memory.visul_slots: unknown key"),
    ],
)
def test_misspelt_environment_variable_gets_a_suggestion(name: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={name: "1"})
    assert str(info.value) == expected or str(info.value).startswith(expected + " (did you mean")


# --- secrets ------------------------------------------------------------------------------------------------

WEBHOOK = (
    '[[plugins.sinks."*"]]\ntype = "webhook"\nurl = "https://hooks.example.com/h"\n'
    'secret = "whsec-TOPSECRET"\nheaders = { Authorization = "Bearer HEADERSECRET", X-Team = "ops" }\n'
)


def test_secrets_never_show_in_reprs_dumps_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from pydantic import SecretStr

    from vsalmonn.plugins.events import WebhookSinkConfig, make_sink

    settings = load_settings(config=write_toml(tmp_path, WEBHOOK), environ={})
    (sink,) = settings.plugins.sinks["*"]
    assert isinstance(sink, WebhookSinkConfig)
    assert isinstance(sink.secret, SecretStr) and sink.secret.get_secret_value() == "whsec-TOPSECRET"
    assert sink.headers["Authorization"].get_secret_value() == "Bearer HEADERSECRET"
    logging.getLogger("vsalmonn.test").warning("settings: %s / %r", settings, settings)
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        str(settings.model_dump()),
        caplog.text,
    ]
    for text in shown:
        assert "TOPSECRET" not in text and "HEADERSECRET" not in text
    assert "**********" in caplog.text
    # what the webhook sends is the real value
    made = make_sink(sink)
    try:
        assert made.headers["Authorization"] == "Bearer HEADERSECRET"  # type: ignore[attr-defined]
        assert made.secret == "whsec-TOPSECRET"  # type: ignore[attr-defined]
    finally:
        made.close()


def test_catalog_password_from_the_environment_joins_the_files_url_and_stays_secret(tmp_path: Path) -> None:
    config = write_toml(tmp_path, '[store]\ncatalog_url = "postgresql+psycopg://vs@db.internal:5432/vs"\n')
    settings = load_settings(config=config, environ={"VSALMONN_STORE__CATALOG_PASSWORD": "pg-S3CRET"})
    assert settings.store.catalog_target() == "postgresql+psycopg://vs:pg-S3CRET@db.internal:5432/vs"
    assert "pg-S3CRET" not in repr(settings) and "pg-S3CRET" not in settings.model_dump_json()
    described = {row.key: row for row in describe_settings(config=config, environ={
        "VSALMONN_STORE__CATALOG_PASSWORD": "pg-S3CRET"})}  # fmt: skip
    assert described["store.catalog_password"].value == "**********"
    assert described["store.catalog_password"].source == "env VSALMONN_STORE__CATALOG_PASSWORD"
    # without a separate password the URL is used as written, and without a URL the default catalog
    assert load_settings(config=config, environ={}).store.catalog_target() == (
        "postgresql+psycopg://vs@db.internal:5432/vs"
    )
    assert load_settings(environ={"VSALMONN_STORE__CATALOG_PASSWORD": "x"}).store.catalog_target() is None


def test_webhook_secret_from_the_environment_is_a_secret_too() -> None:
    env = {
        "VSALMONN_PLUGINS__SINKS": '{"*": [{"type": "webhook", "url": "http://x/h", "secret": "ENVSECRET"}]}'
    }
    settings = load_settings(environ=env)
    assert "ENVSECRET" not in repr(settings)
    assert settings.plugins.sinks["*"][0].secret.get_secret_value() == "ENVSECRET"  # type: ignore[union-attr]
    shown = {v.key: v for v in describe_settings(environ=env)}
    assert shown['plugins.sinks."*"[0].secret'].value == "**********"
    assert shown['plugins.sinks."*"[0].secret'].source == "env VSALMONN_PLUGINS__SINKS"


# --- provenance ---------------------------------------------------------------------------------------------


def test_describe_settings_names_the_source_of_every_value(tmp_path: Path) -> None:
    config = write_toml(
        tmp_path,
        'data_dir = "store"\n[memory]\nvisual_slots = 4096\n[store]\nretention = { keep_last = 5 }\n'
        '[[streams]]\nname = "gate"\nsource = "rtsp://admin:pw@10.0.0.7/s"\n'
        '[[streams]]\nname = "desk"\nsource = "/srv/in"\nkind = "folder"\n' + WEBHOOK,
    )
    env = {
        "VSALMONN_MEMORY__AUDIO_SLOTS": "128",
        "VSALMONN_STORE__DATA_RETENTION__LABELS__MAX_AGE_S": "60",
        CATALOG_ENV: "postgresql+psycopg://u:pw@db/v",
    }
    rows = describe_settings(config=config, data_dir=tmp_path / "flagged", environ=env)
    by_key = {row.key: row for row in rows}
    assert len(by_key) == len(rows)  # one row per leaf
    file = f"file {config}"
    expect = {
        "data_dir": (str(tmp_path / "flagged"), "flag --data"),
        "memory.visual_slots": (4096, file),
        "memory.audio_slots": (128, "env VSALMONN_MEMORY__AUDIO_SLOTS"),
        "memory.dim": (384, "default"),
        "memory.encoders": ("efficientnet-lite0/minilm", "derived"),
        "store.catalog_url": ("postgresql+psycopg://***@db/v", "env VSALMONN_CATALOG_URL"),
        "store.retention.keep_last": (5, file),
        "store.retention.max_bytes": (None, "default"),
        "store.data_retention.labels.max_age_s": (
            60.0,
            "env VSALMONN_STORE__DATA_RETENTION__LABELS__MAX_AGE_S",
        ),
        "store.data_retention.labels.max_bytes": (256_000_000, "default"),
        "streams[0].name": ("gate", file),
        "streams[0].source": ("rtsp://***@10.0.0.7/s", file),
        "streams[0].kind": (None, "default"),
        "streams[1].kind": ("folder", file),
        "streams[1].options": ({}, "default"),
        'plugins.sinks."*"[0].secret': ("**********", file),
        'plugins.sinks."*"[0].headers.Authorization': ("**********", file),
        'plugins.sinks."*"[0].retries': (3, "default"),
        "plugins.enabled": ([], "default"),
        "plugins.settings": ({}, "default"),
        "agent.llm": ("smollm2", "default"),
        "perception.fps": (1.0, "default"),
        "daemon.checkpoint_every_s": (60.0, "default"),
    }
    for key, (value, source) in expect.items():
        assert (by_key[key].value, by_key[key].source) == (value, source), key
    # every leaf of every component is there
    for table, model in [("memory", MemoryConfig), ("perception", Settings().perception.__class__)]:
        for name in model.model_fields:
            assert f"{table}.{name}" in by_key
    assert json.loads(json.dumps([row.model_dump() for row in rows]))  # JSON-able, for config show --json
    assert "pw@" not in json.dumps([row.model_dump() for row in rows])
    assert "TOPSECRET" not in json.dumps([row.model_dump() for row in rows])


def test_describe_settings_sources_of_a_list_given_whole() -> None:
    """A list set by the environment replaces the file's whole; its tables' unset keys are defaults."""
    env = {"VSALMONN_STREAMS": '[{"name": "a", "source": "x.mp4"}]'}
    by_key = {row.key: row for row in describe_settings(environ=env)}
    assert by_key["streams[0].name"].source == "env VSALMONN_STREAMS"
    assert by_key["streams[0].kind"].source == "default"
    assert "streams[1].name" not in by_key


def test_describe_settings_without_sources_is_all_defaults() -> None:
    rows = describe_settings(environ={})
    assert {row.source for row in rows} == {"default", "derived"}
    assert {row.key: row.value for row in rows}["streams"] == []
    assert [row.key for row in rows if row.source == "derived"] == ["memory.encoders"]


def test_describe_settings_encoders_set_is_not_derived(tmp_path: Path) -> None:
    config = write_toml(tmp_path, '[memory]\nencoders = "clip/clip"\n')
    by_key = {row.key: row for row in describe_settings(config=config, environ={})}
    assert by_key["memory.encoders"].source == f"file {config}"
    env = {CONFIG_ENV: str(config)}
    assert {row.key: row for row in describe_settings(environ=env)}[
        "memory.encoders"
    ].source == f"file {config}"


def test_describe_settings_fails_as_load_settings_does(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="did you mean"):
        describe_settings(environ={"VSALMONN_MEMORY__VISUL_SLOTS": "1"})


def test_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    config = write_toml(tmp_path, "")
    afile = tmp_path / "a-file"
    afile.write_text("x", encoding="utf-8")
    with pytest.raises(SettingsError, match="exists and is not a directory"):
        load_settings(config=config, data_dir=afile, environ={})
    env_dir = tmp_path / "env dir"  # a space and "env " in the file's path do not confuse the blame
    env_dir.mkdir()
    bad = write_toml(env_dir, "[memory]\nheads = 0\n")
    with pytest.raises(SettingsError) as info:
        load_settings(config=bad, environ={})
    assert str(info.value).startswith(f"{bad}: memory.heads: Input should be greater than 0")


def test_two_variables_behind_one_table_error_are_both_named() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"VSALMONN_MEMORY__DIM": "100", "VSALMONN_MEMORY__HEADS": "8"})
    assert str(info.value).startswith("VSALMONN_MEMORY__DIM, VSALMONN_MEMORY__HEADS: memory: Value error")


def test_webhook_sinks_that_differ_only_in_secrets_stay_two_sinks() -> None:
    """Secrets dump masked, so they must still count when equal sink settings share one sink."""
    from vsalmonn.plugins.events import EventBus

    hook = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}
    sinks = {
        "a": [{**hook, "secret": "one", "headers": {"Authorization": "Bearer A"}}],
        "b": [{**hook, "secret": "two", "headers": {"Authorization": "Bearer A"}}],
        "c": [{**hook, "secret": "one", "headers": {"Authorization": "Bearer C"}}],
        "d": [{**hook, "secret": "one", "headers": {"Authorization": "Bearer A"}}],
    }
    bus = EventBus(sinks=sinks)
    try:
        made = {name: bus._sinks_for(name)[0] for name in sinks}
        assert made["a"] is made["d"]  # the same settings: one sink
        assert len({id(made[name]) for name in "abc"}) == 3
        assert (made["b"].secret, made["c"].headers["Authorization"]) == ("two", "Bearer C")  # type: ignore[attr-defined]
    finally:
        bus.close()


def test_the_ray_backend_settings_are_read_listed_and_checked(tmp_path: Path) -> None:
    from vsalmonn.ray_backend import RayBackendError, check_placement

    path = write_toml(
        tmp_path,
        '[daemon]\nbackend = "ray"\nray_address = "10.0.0.1:6379"\nray_num_cpus = 2\nray_max_restarts = -1\n'
        '[store]\ncatalog_url = "postgresql+psycopg://vsalmonn@db/vsalmonn"\n',
    )
    settings = load_settings(config=path, environ={"VSALMONN_DAEMON__RAY_NUM_GPUS": "0.5"})
    daemon = settings.daemon
    assert (daemon.backend, daemon.ray_address, daemon.ray_num_cpus) == ("ray", "10.0.0.1:6379", 2.0)
    assert (daemon.ray_max_restarts, daemon.ray_num_gpus, daemon.ray_scheduling) == (-1, 0.5, "spread")
    shown = {row.key: row for row in describe_settings(config=path, environ={})}
    assert shown["daemon.backend"].value == "ray" and shown["daemon.backend"].source == f"file {path}"
    assert shown["daemon.ray_lock_wait_s"].source == "default"
    check_placement(settings, alive_nodes=3)  # PostgreSQL: any number of nodes
    check_placement(Settings(), alive_nodes=1)  # SQLite on one node is allowed
    with pytest.raises(RayBackendError, match="on 2 nodes needs a catalog every node reaches"):
        check_placement(Settings(), alive_nodes=2)
    with pytest.raises(SettingsError, match=r"daemon\.backend: Input should be 'local' or 'ray'"):
        load_settings(config=write_toml(tmp_path, '[daemon]\nbackend = "k8s"\n'), environ={})


def test_a_cuda_memory_on_ray_is_refused_where_ray_could_not_give_it_a_gpu() -> None:
    from vsalmonn.ray_backend import RayBackendError, check_gpus

    def settings(device: str, fraction: float = 0.25) -> Settings:
        return Settings(memory={"device": device}, daemon={"backend": "ray", "ray_num_gpus": fraction})

    check_gpus(settings("cpu"), cluster_gpus=0)  # a CPU memory needs nothing of the cluster
    check_gpus(settings("cuda"), cluster_gpus=2)
    refusals = {
        "on Ray: use 'cuda' (Ray picks each actor's GPU": (settings("cuda:1"), 2),
        "needs daemon.ray_num_gpus > 0": (settings("cuda", fraction=0), 2),
        "but the cluster has no GPUs": (settings("cuda"), 0),
    }
    for reason, (given, gpus) in refusals.items():
        with pytest.raises(RayBackendError, match=re.escape(reason)) as got:
            check_gpus(given, cluster_gpus=gpus)
        assert "\n" not in str(got.value)
