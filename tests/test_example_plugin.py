"""The example plugin of docs/plugins.md (examples/vsalmonn-doorbell), installed for real with pip (offline),
found through its entry point, and used by the agent, the pipeline and `vsalmonn plugins list`."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from sqlalchemy import select

from vsalmonn.app import make_agent, open_plugins
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.models import Event
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.ingest import Encoders, ingest_file
from vsalmonn.plugins import PluginConfig, PluginManager
from vsalmonn.settings import Settings
from vsalmonn.tools import VideoMemoryToolkit

from . import media

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "vsalmonn-doorbell"
MODULE = "vsalmonn_doorbell"
PERCEPTION = PerceptionConfig(speech_encoder="none")
MEMORY = MemoryConfig(visual_slots=2048, audio_slots=256)
DOORBELL = {"labels": ["jean", "mailbag"], "min_probability": 0.3, "cooldown_s": 10}
SETTINGS_TOML = """
[plugins]
enabled = ["doorbell"]

[plugins.settings.doorbell]
labels = ["jean", "mailbag"]
min_probability = 0.3
cooldown_s = 10

[[plugins.sinks.doorbell]]
type = "jsonl"
path = "doorbell.jsonl"

[[plugins.sinks.doorbell]]
type = "webhook"
url = "http://127.0.0.1:9/vsalmonn"
secret = "not-a-real-secret"
"""
# What pip says when it needed something from an index that it cannot reach (it should not need one here).
OFFLINE_SIGNS = ("could not find a version", "no matching distribution", "network is unreachable")
BUILD_REQUIRES = (77,)  # setuptools of the example's [build-system] (license as an SPDX expression)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example installed by pip into a folder of its own (not on sys.path yet)."""
    for needed in ("pip", "setuptools"):
        if importlib.util.find_spec(needed) is None:
            pytest.skip(f"{needed} is not installed: cannot build the example offline")
    setuptools = metadata.version("setuptools")
    if tuple(int(p) for p in setuptools.split(".")[:1]) < BUILD_REQUIRES:
        pytest.skip(f"the example builds with setuptools>=77; this environment has {setuptools}")
    work = tmp_path_factory.mktemp("doorbell")
    source = work / "src"  # a copy: pip builds in the source folder and leaves build/ and *.egg-info there
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = work / "site"
    command = [
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
        "--disable-pip-version-check", "--no-input", "--quiet", "--target", str(target), str(source),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()
        if any(sign in output.lower() for sign in OFFLINE_SIGNS):
            pytest.skip(f"pip cannot install the example offline: {output.splitlines()[-1]}")
        pytest.fail(f"pip install of {EXAMPLE.name} failed:\n{output}")
    return target


@pytest.fixture
def installed(site: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The installed example on sys.path, its module imported afresh by whoever loads it."""
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, MODULE, raising=False)
    yield site
    sys.modules.pop(MODULE, None)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory: pytest.TempPathFactory) -> Encoders:
    data = tmp_path_factory.mktemp("models")
    # Embedding the 1000 ImageNet names takes 15-30 s here: start from the default data directory's cached
    # matrix when there is one (its name is a hash of the names and the text model; a stale one is unused).
    for cached in (REPO / "vsalmonn-data" / "models").glob("label-embeddings-*.npy"):
        (data / "models").mkdir(exist_ok=True)
        shutil.copyfile(cached, data / "models" / cached.name)
    return Encoders.from_config(PERCEPTION, data)


def ingest(data: Path, store: MemoryStore, encoders: Encoders, stream: str, **kwargs: Any) -> int:
    """A 3 s silent clip ingested into `stream`; the number of frames sampled."""
    clip = media.write_media(data.parent / f"{stream}.mp4", video_times=media.uniform_times(3, 5), rate=5)
    result = ingest_file(
        clip, stream, store=store, encoders=encoders, perception=PERCEPTION, memory_config=MEMORY,
        window_s=10, checkpoint_every_s=10, **kwargs,
    )  # fmt: skip
    return result.frames


def frame(stream: str, t: float, *labels: tuple[str, float]) -> dict[str, Any]:
    pixels, tokens = np.zeros((8, 8, 3), np.uint8), np.zeros((1, 8), np.float32)
    return {"stream": stream, "t": t, "frame": pixels, "tokens": tokens, "labels": labels}


class ScriptedModel(GenericFakeChatModel):
    """A chat model replying from a script that accepts tools, as a tool-calling model would."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def test_the_installed_example_is_discovered_through_its_entry_point(installed: Path) -> None:
    assert (installed / "vsalmonn_doorbell-0.1.0.dist-info" / "entry_points.txt").is_file()
    manager = PluginManager(PluginConfig())
    manager.load()
    (info,) = [p for p in manager.plugins() if p.name == "doorbell"]
    assert info.state == "active", info.error
    assert info.dist == "vsalmonn-doorbell" and info.version == "0.1.0" and info.value == MODULE
    assert set(info.hooks) == {
        "plugin_settings_model", "configure", "on_frame", "register_tools", "agent_system_prompt",
    }  # fmt: skip
    assert sys.modules[MODULE].__file__.startswith(str(installed)), "the installed copy, not the source"
    manager.close()


def test_the_agent_gets_the_tool_and_the_prompt(
    installed: Path, tmp_path: Path, encoders: Encoders, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    settings = Settings.model_validate(
        {
            "data_dir": data,
            "agent": {"mode": "tools"},  # the scripted model calls tools, as ollama: and openai: models do
            "plugins": {"enabled": ["doorbell"], "settings": {"doorbell": DOORBELL}},
        }
    )
    script = iter(
        [
            AIMessage("", tool_calls=[{"name": "doorbell_visits", "args": {"stream": "porch"}, "id": "a"}]),
            AIMessage("Someone came to the door at 00:00:02."),
        ]
    )

    def chat_model(config: Any, data_dir: Path) -> ScriptedModel:  # instead of loading SmolLM2
        return ScriptedModel(messages=script)

    monkeypatch.setattr("vsalmonn.agent.models.chat_model", chat_model)
    with MemoryStore(data) as store:
        ingest(data, store, encoders, "porch")
        plugins = open_plugins(settings, store)
        plugins.call("on_frame", **frame("porch", 2.0, ("jean, blue jean", 0.7)))
        with VideoMemoryToolkit(store=store, text_encoder=encoders.text) as toolkit:
            agent = make_agent(settings, toolkit, plugins=plugins)
            assert "doorbell_visits" in agent.tools and "search_video_memory" in agent.tools
            prompt = sys.modules[MODULE].PROMPT
            assert agent.system_prompt is not None and prompt in agent.system_prompt
            answer = agent.ask("Who came to the door?")
        plugins.close()
    assert answer.steps[0]["tool"] == "doorbell_visits" and answer.steps[0]["status"] == "success"
    assert "00:00:02" in answer.steps[0]["result"] and "jean, blue jean" in answer.steps[0]["result"]
    assert [(c.stream, c.t0, c.t1) for c in answer.citations] == [("porch", 2.0, 2.0)]


def test_a_watched_label_raises_a_stored_visitor_event(
    installed: Path, tmp_path: Path, encoders: Encoders
) -> None:
    data = tmp_path / "data"
    sinks = {"doorbell": [{"type": "jsonl", "path": "doorbell.jsonl"}]}
    config = PluginConfig.model_validate(
        {"enabled": ["doorbell"], "settings": {"doorbell": DOORBELL}, "sinks": sinks}
    )
    with MemoryStore(data) as store:
        manager = PluginManager(config, store=store, data_dir=data)
        manager.load()
        frames = ingest(data, store, encoders, "porch", plugins=manager)  # the pipeline calls on_frame
        stats = manager.stats()["doorbell"]["hooks"]["on_frame"]
        assert stats["calls"] == frames == 3 and stats["failures"] == 0

        manager.call("on_frame", **frame("porch", 1.0, ("web site, website", 0.9), ("jean, blue jean", 0.6)))
        manager.call("on_frame", **frame("porch", 2.0, ("mailbag, postbag", 0.9)))  # the same visit
        manager.call("on_frame", **frame("porch", 2.5, ("jean, blue jean", 0.1)))  # too unsure
        manager.call("on_frame", **frame("porch", 30.0, ("jean, blue jean", 0.5)))  # a new visit
        with store.catalog.session() as session:
            rows = list(
                session.scalars(select(Event).where(Event.kind == "doorbell.visitor").order_by(Event.id))
            )
        assert [(r.source, r.t, r.payload["label"]) for r in rows] == [
            ("doorbell", 1.0, "jean, blue jean"),
            ("doorbell", 30.0, "jean, blue jean"),
        ]
        assert {r.stream_id for r in rows} == {store.catalog.stream("porch").id}
        lines = [json.loads(line) for line in (data / "doorbell.jsonl").read_text().splitlines()]
        assert [(e["kind"], e["stream"], e["t"], e["id"]) for e in lines] == [
            ("doorbell.visitor", "porch", r.t, r.id) for r in rows
        ], "delivered to the plugin's sink, as stored"
        visits = sys.modules[MODULE].DOORBELL.visits("porch")
        assert [(v.t0, v.t1, v.label, v.sightings) for v in visits] == [
            (30.0, 30.0, "jean, blue jean", 1),
            (1.0, 2.0, "mailbag, postbag", 2),
        ]

        # Another process (here: a fresh instance) has nothing in memory: its tool reads the catalog.
        other = sys.modules[MODULE].Doorbell()
        with VideoMemoryToolkit(store=store, text_encoder=encoders.text) as toolkit:
            tool = other.visits_tool(toolkit.view)
            text, artifact = tool.func(stream="porch")
            assert artifact["source"] == "catalog" and [m["t0"] for m in artifact["moments"]] == [30.0, 1.0]
            assert "00:00:30" in text
            unknown = tool.invoke({"stream": "garden"})
            assert "no stream named 'garden'" in unknown
        manager.close()


def test_plugins_list_shows_the_installed_example(installed: Path, tmp_path: Path) -> None:
    config = tmp_path / "vsalmonn.toml"
    config.write_text(SETTINGS_TOML)
    path = os.pathsep.join(filter(None, [str(installed), str(REPO), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-m", "vsalmonn", "--config", str(config), "--data", str(tmp_path / "data"),
         "plugins", "list", "--json"],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, "PYTHONPATH": path},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    plugins = {p["name"]: p for p in json.loads(done.stdout)["plugins"]}
    doorbell = plugins["doorbell"]
    assert doorbell["state"] == "active" and doorbell["version"] == "0.1.0"
    assert doorbell["dist"] == "vsalmonn-doorbell" and "on_frame" in doorbell["hooks"]
    assert plugins["meeting_monitor"]["state"] == "off"  # built in, not enabled
