"""The tools' text encoder is injected: given, or made once by a factory on the first search; never chosen by
the tools themselves, which import nothing of perception (DESIGN §1: tools sit beside perception, not on it).
"""

from __future__ import annotations

import ast
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from vsalmonn.app import make_toolkit, make_view, text_encoder_factory
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.encoders import register_encoder
from vsalmonn.settings import Settings
from vsalmonn.tools.encoding import LazyTextEncoder, NoTextEncoder, TextEncoder
from vsalmonn.tools.memory_view import MemoryView, ViewError

ROOT = Path(__file__).resolve().parents[1]
FAKE = "test-fake-text"


class FakeText:
    """A text encoder that counts how often it is made; every text embeds to the same unit row."""

    made = 0
    name = FAKE
    dim = 4

    def __init__(self) -> None:
        type(self).made += 1

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.tile(np.eye(1, 4, dtype=np.float32), (len(texts), 1))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    FakeText.made = 0
    register_encoder("text", FAKE, lambda config, data_dir, **shared: FakeText())
    return Settings(data_dir=tmp_path / "data", perception=PerceptionConfig(text_encoder=FAKE))


def test_a_view_without_an_encoder_answers_all_but_search(tmp_path: Path) -> None:
    with MemoryStore.open(tmp_path / "data") as store:
        store.catalog.ensure_stream("cam")
        view = MemoryView(store)
        assert [s.name for s in view.streams()] == ["cam"]
        assert view.events().events == []
        with pytest.raises(ViewError, match="no text encoder") as caught:
            view.encode("a red car")
        assert "\n" not in str(caught.value)


def test_a_factory_is_called_once_on_the_first_search_only(tmp_path: Path) -> None:
    calls: list[int] = []

    def factory() -> TextEncoder:
        calls.append(1)
        return FakeText()

    with MemoryStore.open(tmp_path / "data") as store:
        store.catalog.ensure_stream("cam")
        view = MemoryView(store, text_encoder_factory=factory)
        view.streams()
        assert view.search("a red car") == []  # no checkpoint yet: nothing to embed the prompt for
        assert calls == []
        threads = [threading.Thread(target=view.encode, args=("a red car",)) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert view.encode("x").shape == (1, 4)
        assert calls == [1]


def test_a_given_encoder_wins_over_the_factory() -> None:
    given = FakeText()
    lazy = LazyTextEncoder(given, factory=lambda: pytest.fail("the factory must not be called"))
    assert lazy.available and lazy.get() is given
    empty = LazyTextEncoder()
    assert not empty.available
    with pytest.raises(NoTextEncoder):
        empty.get()


def test_make_toolkit_injects_the_encoder_the_settings_name(settings: Settings) -> None:
    with MemoryStore.open(settings.data_dir, settings.store) as store:
        toolkit = make_toolkit(settings, store)
        assert toolkit.store is store
        assert FakeText.made == 0  # made on the first search, not by building the toolkit
        assert isinstance(toolkit.view.text_encoder, FakeText) and FakeText.made == 1
        assert toolkit.view.text_encoder is toolkit.view.text_encoder
        toolkit.close()
        assert store.catalog.streams() == []  # the toolkit did not close a store it was given

        mine = FakeText()
        assert make_view(settings, store, text_encoder=mine).text_encoder is mine


def test_make_toolkit_and_make_view_open_the_data_directory(settings: Settings) -> None:
    MemoryStore.open(settings.data_dir, settings.store).close()  # a catalog to open read-only
    with make_toolkit(settings, read_only=True) as toolkit:
        assert toolkit.store.data_dir == settings.data_dir
        assert "search_video_memory" in {t.name for t in toolkit.get_tools()}
    with make_view(settings, read_only=True) as view:
        assert view.streams() == []
        assert isinstance(view.text_encoder, FakeText)
    assert isinstance(text_encoder_factory(settings)(), FakeText)


def _imports(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return out


def test_nothing_in_tools_imports_perception_not_even_lazily() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} {name}"
        for path in sorted((ROOT / "vsalmonn" / "tools").rglob("*.py"))
        for line, name in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if name == "vsalmonn.perception" or name.startswith("vsalmonn.perception.")
    ]
    assert found == []
