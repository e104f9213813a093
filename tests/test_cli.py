"""The command line as a user runs it: separate processes, exit statuses and what reaches stdout/stderr."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from vsalmonn.cli import SPIN_COUNT, UsageError, build_parser, main
from vsalmonn.cli.bench import available_benchmarks, load_benchmark
from vsalmonn.cli.output import format_table
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.settings import DATA_ENV
from vsalmonn.smoke import DEMO_BUDGETS, demo_config

from .words import words


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> Outcome:
    """Run main(ARGS) here: a second faster than a subprocess, which pays for importing torch again."""
    try:
        code = main(list(args))
    except SystemExit as exc:  # argparse's own exits (--help, usage errors)
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return Outcome(code, out, err)


def vsalmonn(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vsalmonn ARGS`` in ``cwd`` with no VSALMONN_DATA inherited from the caller."""
    env = {k: v for k, v in os.environ.items() if k != DATA_ENV}
    return subprocess.run(
        [sys.executable, "-m", "vsalmonn", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def assert_one_line_error(result: Outcome | subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help(tmp_path: Path) -> None:
    result = vsalmonn("--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("demo", "bench", "--data", "--config"):
        assert word in result.stdout


@pytest.mark.parametrize("command", ["demo", "bench"])
def test_every_command_takes_the_common_options(capsys: pytest.CaptureFixture[str], command: str) -> None:
    result = in_process(capsys, command, "--help")
    assert result.returncode == 0
    for option in ("--data", "--config", "--verbose"):
        assert option in result.stdout


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "vsalmonn"
    if not script.exists():
        pytest.skip("no console script beside this interpreter (not an installed environment)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("vsalmonn ")


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(in_process(capsys), "required")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(in_process(capsys, "nosuch"), "invalid choice")


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(in_process(capsys, "demo", "--fast"), "unrecognized arguments: --fast")


def test_unknown_benchmark_lists_the_available_ones(tmp_path: Path) -> None:
    assert_one_line_error(vsalmonn("bench", "nosuch", cwd=tmp_path), "unknown benchmark 'nosuch'", "ttt")


def test_missing_config_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = in_process(capsys, "--config", str(tmp_path / "absent.toml"), "bench", "ttt")
    assert_one_line_error(result, "config file not found")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("[memory\n", "invalid TOML"), ("[memory]\nslots = 3\n", "memory.slots: unknown key")],
)
def test_bad_config_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, text: str, expected: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    assert_one_line_error(in_process(capsys, "demo", "--config", str(config)), expected)


def test_benchmarks_need_a_source_checkout(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="need a source checkout"):
        load_benchmark("ttt", bench_dir=tmp_path)


def test_bench_ttt_is_available() -> None:
    assert "ttt" in available_benchmarks()
    module = load_benchmark("ttt")
    assert callable(module.run) and callable(module.render)


def test_format_table_aligns_columns() -> None:
    table = format_table(["name", "n"], [["a", "1"], ["long name", "1,000"]])
    assert table.splitlines() == [
        "name           n",
        "---------  -----",
        "a              1",
        "long name  1,000",
    ]


def test_demo_answers_the_sample_questions_with_the_right_times(tmp_path: Path) -> None:
    result = vsalmonn("demo", cwd=tmp_path, timeout=300)  # a fresh data directory: models set up too
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    answers = re.findall(r"^   cited (.*); truly at (.*): (right|wrong)", result.stdout, flags=re.MULTILINE)
    assert len(answers) >= 3, result.stdout
    assert all(mark == "right" for *_, mark in answers), result.stdout
    again = vsalmonn("demo", cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and "already in memory" in again.stdout


def test_memory_demo_finds_every_planted_vector_at_rank_1(tmp_path: Path) -> None:
    result = vsalmonn("demo", "--memory", cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "writing:" in result.stderr  # progress goes to stderr, results to stdout
    rows = re.findall(r"^((?:visual|audio)-\d)\s.*\s(\S+)$", result.stdout, flags=re.MULTILINE)
    assert len(rows) == 4, result.stdout
    assert all(rank == "1" for _, rank in rows), result.stdout
    assert "4 of 4 planted vectors found at rank 1" in result.stdout


@pytest.mark.parametrize(
    "argv", [["--data", "d", "--config", "c.toml", "demo"], ["demo", "--data", "d", "--config", "c.toml"]]
)
def test_common_options_go_before_or_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.data, args.config, args.command) == (Path("d"), Path("c.toml"), "demo")


def test_demo_budgets_yield_to_explicit_settings() -> None:
    assert demo_config(MemoryConfig()).visual_slots == DEMO_BUDGETS["visual_slots"]
    config = demo_config(MemoryConfig(visual_slots=8192, optimizer="gd"))
    assert config.visual_slots == 8192  # set explicitly: the demo keeps it
    assert config.audio_slots == DEMO_BUDGETS["audio_slots"]
    assert config.optimizer == "gd"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: d / "missing.mp4", "missing.mp4"),
        (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "empty file"),
        (lambda d: (d / "notes.mp4").write_text("not a video") and d / "notes.mp4", "notes.mp4"),
    ],
)
def test_ingest_refuses_what_it_cannot_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: object, fragment: str
) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    result = in_process(capsys, "--data", str(tmp_path / "data"), "ingest", str(source))
    assert_one_line_error(result, fragment)


def test_ingest_refuses_a_bad_stream_name(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = in_process(capsys, "--data", str(tmp_path), "ingest", str(tmp_path), "--stream", "../up")
    assert_one_line_error(result)


def test_ingest_a_clip_then_again(tmp_path: Path) -> None:
    from . import media

    clip = media.write_media(tmp_path / "clip.mp4", video_times=media.uniform_times(12, 5), rate=5)
    config = tmp_path / "vsalmonn.toml"
    config.write_text('[perception]\nspeech_encoder = "none"\n[memory]\nvisual_slots = 64\n')
    first = vsalmonn(
        "--config", str(config), "--data", "data", "ingest", str(clip), cwd=tmp_path, timeout=300
    )
    assert first.returncode == 0, first.stderr
    assert "stream clip:" in first.stdout and "12 frames" in first.stdout
    second = vsalmonn(
        "--config", str(config), "--data", "data", "ingest", str(clip), cwd=tmp_path, timeout=300
    )
    assert second.returncode == 0 and "ingested completely already" in second.stdout
    assert (tmp_path / "data" / "catalog.sqlite").is_file()
    found = vsalmonn(
        "--data", "data", "search", "coloured bars", "--json", "-k", "3", cwd=tmp_path, timeout=300
    )
    assert found.returncode == 0, found.stderr
    moments = json.loads(found.stdout)["moments"]
    assert 1 <= len(moments) <= 3
    assert all(m["stream"] == "clip" and 0 <= m["t0"] <= m["t1"] <= 13 for m in moments), moments
    assert [m["score"] for m in moments] == sorted((m["score"] for m in moments), reverse=True)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["search", "  "], "prompt is empty"),
        (["search", "x", "-k", "0"], "-k"),
        (["search", "x", "--stream", "nope"], "nope"),
    ],
)
def test_search_refuses_bad_arguments(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], fragment: str
) -> None:
    MemoryStore(tmp_path).close()  # a store with no streams yet
    assert_one_line_error(in_process(capsys, "--data", str(tmp_path), *args), fragment)


def test_search_of_an_empty_store_says_so(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = in_process(capsys, "--data", str(tmp_path / "absent"), "search", "anything")
    assert_one_line_error(result, "nothing has been ingested")
    assert not (tmp_path / "absent" / "catalog.sqlite").exists(), "a mistyped --data creates nothing"
    MemoryStore(tmp_path).close()
    result = in_process(capsys, "--data", str(tmp_path), "search", "anything")
    assert result.returncode == 0 and "no moments" in result.stdout


def test_status_of_a_store_and_of_nothing(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert_one_line_error(in_process(capsys, "--data", str(tmp_path / "absent"), "status"), "nothing")
    with MemoryStore(tmp_path) as store:
        store.catalog.ensure_stream("lobby", source="rtsp://cam/1", kind="url")
    result = in_process(capsys, "--data", str(tmp_path), "status")
    assert result.returncode == 0 and "lobby" in result.stdout and "new" in result.stdout
    result = in_process(capsys, "--data", str(tmp_path), "status", "--json")
    report = json.loads(result.stdout)
    sizes = report["streams"][0].pop("sizes")  # rows and bytes per kind (tests/test_retention.py)
    assert report == {
        "streams": [{"stream": "lobby", "kind": "url", "source": "rtsp://cam/1", "state": "new"}]
    }
    assert all(size == {"rows": 0, "bytes": 0} for size in sizes.values()) and "checkpoints" in sizes


def test_queries_make_openmp_threads_wait_passively_and_ingest_spins_briefly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    in_process(capsys, "--data", str(tmp_path), "ingest", str(tmp_path / "missing.mp4"))
    assert "OMP_WAIT_POLICY" not in os.environ and os.environ["GOMP_SPINCOUNT"] == SPIN_COUNT
    monkeypatch.delenv("GOMP_SPINCOUNT")
    in_process(capsys, "--data", str(tmp_path), "status")
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in os.environ
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    in_process(capsys, "--data", str(tmp_path), "status")
    in_process(capsys, "--data", str(tmp_path), "ingest", str(tmp_path / "missing.mp4"))
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE", "a user's own setting wins"
    assert "GOMP_SPINCOUNT" not in os.environ, "and is not bent by a spin count"


def test_built_in_plugins_run_inside_ingest_when_enabled(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from sqlalchemy import select

    from vsalmonn import sample
    from vsalmonn.memory_store.models import Event

    config = tmp_path / "v.toml"
    config.write_text(
        '[daemon]\nwindow_s = 10\n[plugins]\nenabled = ["meeting_monitor", "surveillance"]\n'
        '[plugins.settings.meeting_monitor]\nkeywords = ["goodbye"]\nllm = "extractive"\n'
        "[plugins.settings.surveillance]\ncooldown_s = 10\n"
    )
    data = tmp_path / "data"
    result = in_process(capsys, "--config", str(config), "--data", str(data), "ingest", str(sample.clip()))
    assert result.returncode == 0, result.stderr
    with MemoryStore(data) as store, store.catalog.session() as s:
        events = [(e.kind, e.t, e.payload or {}) for e in s.scalars(select(Event).order_by(Event.id))]
    kinds = {kind for kind, _, _ in events}
    assert {"meeting.keyword", "meeting.minutes", "surveillance.people", "surveillance.motion"} <= kinds, (
        kinds
    )
    (goodbye,) = [t for kind, t, _ in events if kind == "meeting.keyword"]
    assert abs(goodbye - 26.0) <= 2.0
    thumbs = [p["thumbnail"] for kind, _, p in events if kind == "surveillance.people"]
    assert thumbs and all((data / t).read_bytes()[:2] == b"\xff\xd8" for t in thumbs)
    listed = in_process(capsys, "--config", str(config), "--data", str(data), "plugins", "list", "--json")
    states = {p["name"]: p["state"] for p in json.loads(listed.stdout)["plugins"]}
    assert states == {"meeting_monitor": "active", "surveillance": "active"}
    srt = in_process(capsys, "--data", str(data), "export", "street-talk", "--format", "srt")
    assert srt.returncode == 0 and "-->" in srt.stdout, srt
    assert "goodbye" in words(srt.stdout), srt.stdout  # the model's punctuation differs between CPUs


@pytest.mark.parametrize(
    ("argv", "line"),
    [
        (["serach", "x"], "vsalmonn: error: unknown command 'serach' (did you mean 'search'?)"),
        (["stor", "check"], "vsalmonn: error: unknown command 'stor' (did you mean 'store'?)"),
        (["store", "chek"], "vsalmonn store: error: unknown action 'chek' (did you mean 'check'?)"),
        (["streams", "delet"], "vsalmonn streams: error: unknown action 'delet' (did you mean 'delete'?)"),
        (["memory", "exprt", "x"], "vsalmonn memory: error: unknown action 'exprt' (did you mean 'export'?)"),
        (["plugins", "lst"], "vsalmonn plugins: error: unknown action 'lst' (did you mean 'list'?)"),
    ],
)
def test_a_misspelt_command_or_action_names_the_closest(
    capsys: pytest.CaptureFixture[str], argv: list[str], line: str
) -> None:
    result = in_process(capsys, *argv)
    assert_one_line_error(result)
    assert result.stderr.strip() == line


def test_an_unknown_action_with_no_close_match_lists_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    result = in_process(capsys, "store", "nosuch")
    assert_one_line_error(result, "invalid choice", "'check'", "'rebuild'")
    assert "did you mean" not in result.stderr


def test_progress_off_a_terminal_is_a_line_per_quarter() -> None:
    import io

    from vsalmonn.cli.output import progress_bar

    stream = io.StringIO()
    with progress_bar("writing", unit="tokens", stream=stream) as progress:
        for done in range(0, 1001, 10):
            progress(done, 1000)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert [re.match(r"writing: +(\d+)%", line).group(1) for line in lines] == ["0", "25", "50", "75", "100"]
    assert lines[-1].endswith("1,000/1,000 tokens [00:00<00:00]")


def test_progress_on_a_terminal_redraws_one_line_and_ends_it() -> None:
    import io

    from vsalmonn.cli.output import progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with progress_bar("ingesting the sample", unit="s", stream=stream) as progress:
        progress(0, 30)
        progress(30, 30)
        progress(30, 30)  # after the total: the bar has ended, nothing more is drawn
    text = stream.getvalue()
    assert text.startswith("\ringesting the sample:") and text.endswith("30/30 s [00:00<00:00]\n")
    assert text.count("\n") == 1


# ----- config show ------------------------------------------------------------------------------------------


def test_config_show_says_where_each_value_came_from(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "vs.toml"
    config.write_text(
        '[memory]\nvisual_slots = 2048\n[store]\ncatalog_url = "postgresql+psycopg://vs:filepw@db/vs"\n'
    )
    monkeypatch.setenv("VSALMONN_DAEMON__CHECKPOINT_EVERY_S", "60")
    monkeypatch.setenv("VSALMONN_STORE__CATALOG_PASSWORD", "envpw-S3CRET")
    data = tmp_path / "data"
    result = in_process(capsys, "config", "show", "--json", "--config", str(config), "--data", str(data))
    assert result.returncode == 0, result.stderr
    rows = {row["key"]: row for row in json.loads(result.stdout)}
    assert rows["memory.visual_slots"] == {
        "key": "memory.visual_slots",
        "value": 2048,
        "source": f"file {config}",
    }
    assert rows["daemon.checkpoint_every_s"]["source"] == "env VSALMONN_DAEMON__CHECKPOINT_EVERY_S"
    assert rows["daemon.checkpoint_every_s"]["value"] == 60.0
    assert rows["data_dir"] == {"key": "data_dir", "value": str(data), "source": "flag --data"}
    assert rows["memory.audio_slots"]["source"] == "default"
    assert rows["store.catalog_password"]["value"] == "**********"
    assert "filepw" not in result.stdout and "envpw-S3CRET" not in result.stdout
    # the table says the same, one row per key
    table = in_process(capsys, "config", "show", "--config", str(config), "--data", str(data))
    assert table.returncode == 0
    line = next(x for x in table.stdout.splitlines() if x.startswith("memory.visual_slots "))
    assert line.split()[1:] == ["2048", "file", str(config)]
    assert len([x for x in table.stdout.splitlines()[2:] if x.strip()]) == len(rows)


def test_config_show_refuses_a_misspelt_setting_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VSALMONN_MEMORY__VISUL_SLOTS", "1")
    result = in_process(capsys, "config", "show")
    assert_one_line_error(result, "VSALMONN_MEMORY__VISUL_SLOTS", "did you mean")


def test_the_command_line_starts_without_the_heavy_libraries(tmp_path: Path) -> None:
    """`vsalmonn --help`, a typo and `config show` answer in a fraction of a second because building the
    parser and the settings imports no model, tensor or database library: each costs 0.1-2 s to import."""
    probe = (
        "import sys, vsalmonn.cli, vsalmonn.settings, vsalmonn.app\n"
        "vsalmonn.settings.load_settings(environ={})\n"
        "vsalmonn.cli.build_parser()\n"
        "heavy = ('sqlalchemy', 'torch', 'numpy', 'av', 'zarr', 'transformers', 'langchain_core')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
