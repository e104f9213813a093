"""The web page at ``/`` in headless Chromium, driven by selenium, against a live uvicorn server.

The browser is Debian's ``chromium`` with its ``chromedriver`` (package ``chromium-driver``; ``.ci/run``
installs them), named explicitly so that selenium never downloads a driver. The store is this module's
copy of the session's spoken clip (tests/talk_store.py: 40 s, three spoken prompts at known times); the
agent behind ``POST /api/ask`` writes with test_serve_ask's scripted chat model. The event feed's test
leaves a screenshot of the page in ``artifacts/serve-page.png`` at the repository root, which CI keeps.
"""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vsalmonn.memory_store.rows.events import add_event
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.ingest import Encoders

from .talk_store import Ingested
from .test_serve import TOKEN, serving, settings_of
from .test_serve_ask import Scripted

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SCREENSHOT = ARTIFACTS / "serve-page.png"
WAIT_S = 20

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="no headless Chromium: install Debian's chromium and chromium-driver (.ci/run does)",
)


def png(width: int, height: int) -> bytes:
    """A real PNG (an orange rectangle), so the browser decodes it: what the thumbnail route serves."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\xf0\x90\x30" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.fixture(scope="module")
def model() -> Scripted:
    """The agent's chat model: scripted, so that ``POST /api/ask`` answers without a language model."""
    return Scripted()


@pytest.fixture(scope="module")
def base_url(ingested: Ingested, encoders: Encoders, model: Scripted) -> Iterator[str]:
    with serving(settings_of(ingested.data), encoders.text, chat_model=model) as client:
        yield str(client.base_url).rstrip("/")


@pytest.fixture(scope="module")
def browser(base_url: str) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1366,900", "--disable-extensions"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The system's chromedriver, by path: selenium then never looks for (or downloads) one.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        driver.get(f"{base_url}/")
        yield driver
    finally:
        driver.quit()


def wait(driver: Any, condition: Any, what: str) -> Any:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, WAIT_S, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        page = text_of(driver, "body")
        raise AssertionError(f"{what}: not within {WAIT_S} s; the page says {page!r}") from None


def text_of(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, selector)
    return found[0].text if found else ""


def assert_no_console_errors(driver: Any) -> None:
    """Nothing the browser logged at SEVERE since the last call (script errors, failed loads, CSP)."""
    severe = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == [], severe


def seconds(hms: str) -> int:
    h, m, s = (int(part) for part in hms.split(":"))
    return h * 3600 + m * 60 + s


@needs_chromium
def test_the_page_loads_with_the_streams_and_recent_events(browser: Any) -> None:
    wait(browser, lambda d: "talk" in text_of(d, "#streams"), "the stream 'talk' listed")
    assert "idle" in text_of(browser, "#streams .stream")  # its status: ingested, nothing running
    assert browser.title.startswith("vsalmonn")
    wait(browser, lambda d: text_of(d, "#feed-state") == "live", "the event feed connected")
    assert "keyword 'goodbye'" in text_of(browser, "#events")  # the ingested store's alert, from /api/events
    timeline = wait(browser, lambda d: text_of(d, ".timeline[data-stream='talk'] .axis"), "talk's timeline")
    assert timeline.split()[0] == "00:00:00" and timeline.split()[-1] == "00:00:40"  # its covered time
    assert_no_console_errors(browser)


@needs_chromium
def test_a_search_for_a_spoken_phrase_shows_the_moment_at_its_time(
    browser: Any, ingested: Ingested, base_url: str
) -> None:
    from selenium.webdriver.common.by import By

    # A thumbnail at the phrase's time, as the surveillance plugin leaves one: the moment shows it.
    thumbs = ingested.data / "thumbs" / "talk"
    thumbs.mkdir(parents=True, exist_ok=True)
    (thumbs / "people-000018.000.png").write_bytes(png(48, 27))
    payload = {"thumbnail": "thumbs/talk/people-000018.000.png"}
    with MemoryStore(ingested.data) as store:
        add_event(
            store.catalog, kind="surveillance.people", stream_id=store.catalog.stream("talk").id, t=18.0,
            message="1 person", source="surveillance", payload=payload,
        )  # fmt: skip

    box = browser.find_element(By.ID, "search-q")
    box.clear()
    box.send_keys("goodbye")
    browser.find_element(By.CSS_SELECTOR, "#search-form button[type=submit]").click()
    cards = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".moment-card"), "a moment")
    first = cards[0]
    shown = first.find_element(By.CSS_SELECTOR, ".moment-time").text  # "00:00:17–00:00:18"
    start, end = (seconds(t) for t in re.findall(r"\d\d:\d\d:\d\d", shown)[:2])
    said = ingested.said_at["goodbye"]
    assert start - 2 <= said <= end + 2, (shown, said)
    assert "Goodbye" in first.text and "SAID" in first.text.upper()  # its evidence: what was said

    # Its mark on talk's timeline, where the phrase was said (a 40 s bar).
    mark = browser.find_element(By.CSS_SELECTOR, ".timeline[data-stream='talk'] .mark.moment[data-index='0']")
    assert mark.text == "1" and shown in mark.get_attribute("title")
    bar = browser.find_element(By.CSS_SELECTOR, ".timeline[data-stream='talk'] .bar")
    at = (mark.rect["x"] - bar.rect["x"]) / bar.rect["width"] * 40.0
    assert abs(at - said) <= 3, (at, said)

    (image,) = wait(browser, lambda d: first.find_elements(By.CSS_SELECTOR, "img.thumb"), "its thumbnail")
    wait(browser, lambda d: d.execute_script("return arguments[0].naturalWidth", image) == 48, "it decoded")

    mark.click()  # the moment: its mark highlighted and the transcript around it
    wait(browser, lambda d: "goodbye" in text_of(d, "#moment .line.hit").lower(), "the transcript around it")
    (selected,) = browser.find_elements(By.CSS_SELECTOR, ".mark.selected")  # the timeline was redrawn
    assert (selected.get_attribute("data-kind"), selected.get_attribute("data-index")) == ("moment", "0")
    assert "selected" in first.get_attribute("class")  # and its card
    assert "weasels" in text_of(browser, "#moment").lower()  # 15 s either side: the line said at 4 s
    assert_no_console_errors(browser)


@needs_chromium
def test_the_event_feed_shows_an_event_written_while_the_page_is_open(
    browser: Any, ingested: Ingested
) -> None:
    wait(browser, lambda d: text_of(d, "#feed-state") == "live", "the event feed connected")
    with MemoryStore(ingested.data) as store:
        add_event(store.catalog, kind="test.page", stream_id=store.catalog.stream("talk").id, t=33.0,
                  message="hello from the test")  # fmt: skip
    wait(browser, lambda d: "hello from the test" in text_of(d, "#events .event"), "the new event, on top")
    top = text_of(browser, "#events .event")
    assert "test.page" in top and "talk" in top and "00:00:33" in top
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    assert SCREENSHOT.stat().st_size > 10_000
    assert_no_console_errors(browser)


@needs_chromium
def test_an_answer_streams_and_its_citations_show_their_moments(
    browser: Any, ingested: Ingested, model: Scripted
) -> None:
    from selenium.webdriver.common.by import By

    def ask(question: str) -> None:
        box = browser.find_element(By.ID, "ask-q")
        box.clear()
        box.send_keys(question)
        browser.find_element(By.ID, "ask-button").click()

    # The answer names no time: the agent appends the best moment, which its answer event cites. Text
    # streams a checked sentence at a time (agent.grounding): the first is shown while the second is written.
    model.pieces, model.fail_at, model.pause_s = ["Someone says", " goodbye.", " It was", " loud."], None, 0.4
    ask("When does someone say goodbye?")
    wait(
        browser, lambda d: text_of(d, "#answer-text.streaming").startswith("Someone says"), "streamed tokens"
    )
    links = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "a.citation"), "the citations")
    link = links[0]
    answer = text_of(browser, "#answer-text")
    assert answer.startswith("Someone says goodbye. It was loud. (see talk at"), answer
    assert not browser.find_elements(By.CSS_SELECTOR, "#answer-text.streaming, #answer-text.partial")
    shown = re.findall(r"\d\d:\d\d:\d\d", link.text)
    assert link.text.startswith("[1] talk ") and shown, link.text
    said = ingested.said_at["goodbye"]
    assert seconds(shown[0]) - 2 <= said <= seconds(shown[-1]) + 2, (link.text, said)
    assert shown[0] in answer  # the text cites the moment the link shows

    link.click()  # its moment: the citation's mark on talk's timeline, and the transcript around it
    wait(browser, lambda d: "goodbye" in text_of(d, "#moment .line.hit").lower(), "the cited transcript")
    (mark,) = browser.find_elements(By.CSS_SELECTOR, ".timeline[data-stream='talk'] .mark.citation")
    assert "selected" in mark.get_attribute("class") and shown[0] in mark.get_attribute("title")
    assert "selected" in link.get_attribute("class")
    assert_no_console_errors(browser)

    model.pieces, model.fail_at, model.pause_s = ["Someone says", " goodbye.", " Then", " someone"], 3, 0.0
    ask("When does someone say goodbye?")  # the model fails mid-answer: an error event
    wait(
        browser, lambda d: "the model fell over mid-answer" in text_of(d, "#ask-error"), "the error's detail"
    )
    assert text_of(browser, "#answer-text.partial").startswith("Someone says")  # the text so far, marked
    assert_no_console_errors(browser)
    model.fail_at = 0
    ask("When does someone say goodbye?")  # before any text: a JSON refusal (500), its detail inline
    wait(browser, lambda d: "the model fell over" in text_of(d, "#ask-error"), "the refusal's detail")
    assert not browser.find_element(By.ID, "answer").is_displayed()
    model.fail_at = None
    browser.get_log("browser")  # the refusal's failed load, logged as it should be


def test_the_page_loads_without_the_token_its_calls_need(ingested: Ingested, encoders: Encoders) -> None:
    """The page holds no data: it loads without a token, and only its API calls are refused without one."""
    with serving(settings_of(ingested.data, token=TOKEN), encoders.text) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for name in ("page.js", "page.css", "icon.svg"):
            assert client.get(f"/page/{name}").status_code == 200, name
        assert client.get("/page/__init__.py").status_code == 404  # only the page's own files
        assert client.get("/api/streams").status_code == 401
        assert "/" not in client.get("/openapi.json").json()["paths"]


@needs_chromium
def test_a_token_asked_for_once_is_kept_and_sent_on_every_call(
    browser: Any, ingested: Ingested, encoders: Encoders
) -> None:
    from selenium.webdriver.common.by import By

    with serving(settings_of(ingested.data, token=TOKEN), encoders.text) as client:
        browser.get(f"{str(client.base_url).rstrip('/')}/")  # another origin: nothing stored for it yet
        shown = lambda d: [f for f in d.find_elements(By.ID, "token-input") if f.is_displayed()]  # noqa: E731
        (field,) = wait(browser, shown, "the token field, after a 401")
        field.send_keys(TOKEN)
        browser.find_element(By.CSS_SELECTOR, "#token-form button[type=submit]").click()
        wait(browser, lambda d: "talk" in text_of(d, "#streams"), "the streams, with the token")
        wait(browser, lambda d: text_of(d, "#feed-state") == "live", "the event feed, with the token")
        assert browser.execute_script("return localStorage.getItem('vsalmonn.token')") == TOKEN
        assert not browser.find_element(By.ID, "token-form").is_displayed()
        browser.refresh()  # kept: a new load sends it at once
        wait(browser, lambda d: "talk" in text_of(d, "#streams"), "the streams after a reload")
        assert not browser.find_element(By.ID, "token-form").is_displayed()
        browser.get("about:blank")  # the page ends its feed as it goes: the server stops at once
