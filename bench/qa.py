"""``vsalmonn bench qa``: a question set over streams built from ../shared/media, answered by `search` and
by `ask` with the embedded model, each scored by whether it points at the right time.

The streams (``bench/_qa_streams.py``): ``vtest.avi`` (street footage) looped, 480x360 at 2 fps, H.264, with
an AAC track (16 kHz mono) over a faint noise floor holding recorded speech prompts of ../shared/media/speech
(each trimmed to its voice) at seeded random times at least 15 s apart, and two real clips spliced into the
picture at seeded times: ``anim-1.mov`` (a glass teapot beside a green ring, looped 3 times: 9.1 s) and
``alea.mpg`` (pink dice tumbling on black, looped twice: 10.9 s). Full: three streams (6, 10 and 10 min), 29
questions; ``--quick``: the first stream only, 9 questions. Each stream has 6-8 further prompts that no
question asks about.

Every stream goes through the real pipeline: `ingest_file` with the default encoders (EfficientNet-Lite0,
Whisper-base with VAD, MiniLM) and `MemoryConfig()`, into a store under ``<data>/bench/``, so transcripts are
Whisper's. Files and store are built once and reused by later runs (``<data>`` is ``$VSALMONN_DATA``, else
``./vsalmonn-data``).

A speech question asks about one prompt, in its words ("When does someone say weasels ate the phone
system?") or in other words ("When is the message stored?" for "Your message has been saved."); its truth is
the span where the prompt's voice was placed. A visual question asks about a spliced clip ("When is a teapot
shown?"); its truth is the clip's span. Scored per question, over the question's stream:

- **search**: `MemoryView.search(question, stream, k=5)`, what ``search_video_memory`` and ``vsalmonn
  search`` run: right at 1 when its best moment overlaps the truth widened by 5 s either side, at 5 when any
  of the five does;
- **ask**: `VideoAgent.ask(question, stream=...)` with the embedded SmolLM2-135M (`chat_model(AgentConfig())`,
  retrieve-then-answer), right when any citation overlaps the truth widened by 5 s. Its wall time is the ask
  latency (model loaded, and one warm-up question asked, before timing).

The embedded model answers these questions in a sentence. For the cost of a one-paragraph answer, each stream
is then asked "Describe in one paragraph what is said in this stream and when." twice: by the same agent (the
answer as the model writes it), and by one whose model may not end its text before the agent's limit of
`AgentConfig.max_new_tokens` (160) new tokens, about 100-120 words: a paragraph at least, the longest answer
the agent lets the model write.

Targets (issue: ``ask`` with the embedded model ≤ 20 s for a one-paragraph answer): the questions' ask time
≤ 20 s at p95, and the longest full-length paragraph ask ≤ 20 s. Right answers have no target; their shares
are reported overall, per kind (speech, visual) and per style of speech question.
"""

from __future__ import annotations

import gc
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

from vsalmonn.agent.config import AgentConfig
from vsalmonn.agent.grounding import times_inside
from vsalmonn.agent.local_model import LocalChatModel
from vsalmonn.agent.loop import VideoAgent
from vsalmonn.agent.models import chat_model
from vsalmonn.cli.output import format_table, quiet_model_loading
from vsalmonn.memory_store import MemoryConfig
from vsalmonn.memory_store.models import Stream, TranscriptSegment
from vsalmonn.memory_store.store import MemoryStore
from vsalmonn.perception.config import PerceptionConfig
from vsalmonn.perception.ingest import ingest_file
from vsalmonn.perception.pipeline import Encoders
from vsalmonn.tools import VideoMemoryToolkit
from vsalmonn.tools.timefmt import hms

from . import _qa_streams as qs
from ._harness import (
    bench_data_dir,
    environment,
    render_environment,
    render_loadavg,
    render_targets,
    shared_media,
    target,
)

TOLERANCE_S = 5.0
SEARCH_K = 5
WARMUP_QUESTION = "What happens in this stream?"
PARAGRAPH_QUESTION = "Describe in one paragraph what is said in this stream and when."
TARGET_ASK_P95_S = 20.0
TARGET_PARAGRAPH_S = 20.0
STORE_DIR = f"qa-store-v{qs.CLIP_VERSION}"
TARGET_TIMES_INSIDE = 1.0
TARGET_ASK_P95_DEFAULT_S = 5.0  # issue 18: the default model's ask on this CPU
LLMS_ENV = "VSALMONN_BENCH_QA_LLMS"  # e.g. "smollm2,gemma3": every model asks every question, side by side
# Words that carry no content: a key word of the evidence is any other word of three letters or more.
STOP_WORDS = frozenset(
    [
        "the",
        "and",
        "for",
        "are",
        "but",
        "not",
        "you",
        "your",
        "yours",
        "our",
        "ours",
        "this",
        "that",
        "these",
        "those",
        "with",
        "from",
        "have",
        "has",
        "had",
        "was",
        "were",
        "will",
        "would",
        "can",
        "could",
        "should",
        "been",
        "being",
        "into",
        "onto",
        "over",
        "under",
        "about",
        "than",
        "then",
        "there",
        "their",
        "they",
        "them",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "how",
        "all",
        "any",
        "each",
        "some",
        "such",
        "very",
        "just",
        "also",
        "only",
        "now",
        "here",
        "its",
        "it's",
        "is",
        "be",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "an",
        "a",
        "or",
        "as",
        "if",
        "so",
        "no",
        "yes",
        "do",
        "does",
        "did",
        "please",
    ]
)


def run(quick: bool) -> dict[str, Any]:
    started = time.perf_counter()
    loadavg_start = os.getloadavg()
    shared = shared_media("qa")
    data_dir = bench_data_dir().resolve()
    folder = data_dir / "bench"
    perception, memory_config, agent_config = PerceptionConfig(), MemoryConfig(), AgentConfig()
    quiet_model_loading(perception.threads)
    recipes = qs.STREAMS[:1] if quick else qs.STREAMS
    plans = [qs.plan(shared, recipe) for recipe in recipes]
    files = {p.recipe.name: qs.stream_file(shared, folder, p) for p in plans}

    loaded_at = time.perf_counter()
    encoders = Encoders.from_config(perception, data_dir)
    encoders_s = time.perf_counter() - loaded_at
    loads = []
    with MemoryStore.open(folder / STORE_DIR) as store:
        ingests = [_ingest(store, encoders, perception, memory_config, p, files) for p in plans]
        toolkit = VideoMemoryToolkit(store=store, text_encoder=encoders.text)
        keys = {p.recipe.name: _key_words(p, ingests[i]["transcript"]) for i, p in enumerate(plans)}
        llms = [x.strip() for x in os.environ.get(LLMS_ENV, agent_config.llm).split(",") if x.strip()]
        models: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        paragraphs: list[dict[str, Any]] = []
        for n, llm in enumerate(llms):
            config = agent_config.model_copy(update={"llm": llm})
            memory = _MemoryWatch()
            loaded_at = time.perf_counter()
            model = chat_model(config, data_dir)
            assert isinstance(model, LocalChatModel), f"{llm}: bench qa measures the embedded models"
            model.load()  # else the first ask would
            model_s = time.perf_counter() - loaded_at
            agent = VideoAgent(model, toolkit.get_tools(), config)
            asked_at = time.perf_counter()
            agent.ask(WARMUP_QUESTION, stream=plans[0].recipe.name)
            warmup_s = time.perf_counter() - asked_at
            asked = []
            for p in plans:
                for question in p.recipe.questions:
                    asked.append(_question(toolkit, agent, p, question, keys[p.recipe.name][question.text]))
                    loads.append(os.getloadavg()[0])
                    _progress(asked[-1], llm)
            if n == 0:  # the paragraphs, for the first (the default) model's latency target
                rows = asked
                full = _FullLength(path=model.path, max_new_tokens=config.max_new_tokens).load()
                for p in plans:
                    chats = (
                        ("as written", agent),
                        ("full length", VideoAgent(full, toolkit.get_tools(), config)),
                    )
                    for kind, chat in chats:
                        paragraphs.append(_paragraph(chat, p.recipe.name, kind))
                        loads.append(os.getloadavg()[0])
                del full
            models[llm] = {
                "path": str(model.path),
                "parameters": sum(t.numel() for t in model._model.parameters()),
                "weights_mb": sum(t.numel() * t.element_size() for t in model._model.parameters()) / 2**20,
                "loading_s": {"chat_model": model_s, "warmup_ask": warmup_s},
                "memory_mb": memory.stop(),
                "summary": _summary(asked),
                "text": _text_summary(asked),
                "ask_latency_s": _percentiles([r["ask"]["seconds"] for r in asked]),
                "answer_words": _percentiles([float(len(r["ask"]["answer"].split())) for r in asked]),
                "questions": [{"question": r["question"], **r["ask"]} for r in asked]
                if n
                else "as questions",
            }
            del agent, model
            gc.collect()
        toolkit.close()
    first = models[llms[0]]
    latency, model_s, warmup_s = first["ask_latency_s"], *first["loading_s"].values()
    longest = max(x["seconds"] for x in paragraphs if x["kind"] == "full length")
    targets = [
        target("ask p95, questions (s)", latency["p95"], TARGET_ASK_P95_S, "s", at_least=False),
        target("ask max, full-length paragraph (s)", longest, TARGET_PARAGRAPH_S, "s", at_least=False),
        target(
            "ask p95, questions, issue 18 (s)", latency["p95"], TARGET_ASK_P95_DEFAULT_S, "s", at_least=False
        ),
        target(
            "answers with every written time inside a citation",
            100 * first["text"]["times_inside"],
            100 * TARGET_TIMES_INSIDE,
            "%",
            at_least=True,
        ),
    ]
    return {
        "benchmark": "qa",
        "quick": quick,
        "environment": environment(),
        "tolerance_s": TOLERANCE_S,
        "search_k": SEARCH_K,
        "streams": [_stream_info(p, files[p.recipe.name]) for p in plans],
        "ingest": ingests,
        "loading_s": {"encoders": encoders_s, "chat_model": model_s, "warmup_ask": warmup_s},
        "llm": llms[0],
        "questions": rows,
        "summary": _summary(rows),
        "text": first["text"],
        "models": models,
        "ask_latency_s": latency,
        "search_latency_ms": {
            k: 1e3 * v for k, v in _percentiles([r["search"]["seconds"] for r in rows]).items()
        },
        "answer_words": _percentiles([float(len(r["ask"]["answer"].split())) for r in rows]),
        "paragraphs": paragraphs,
        "targets": targets,
        "all_pass": all(t["pass"] for t in targets),
        "loadavg": {"start": list(loadavg_start), "end": list(os.getloadavg()), "max_1min": max(loads)},
        "seconds": time.perf_counter() - started,
    }


def _ingest(
    store: MemoryStore,
    encoders: Encoders,
    perception: PerceptionConfig,
    memory_config: MemoryConfig,
    stream: qs.StreamPlan,
    files: dict[str, Path],
) -> dict[str, Any]:
    """The stream into the store through the real pipeline (nothing to do when a previous run did it)."""
    name = stream.recipe.name
    result = ingest_file(
        files[name], name, store=store, encoders=encoders, perception=perception, memory_config=memory_config,
    )  # fmt: skip
    fresh = result.frames > 0
    info = {"stream": name, "cached": not fresh}
    if fresh:
        info |= {
            "frames": result.frames,
            "segments": result.segments,
            "wall_s": result.wall_s,
            "speed": result.speed,
        }
        print(
            f"bench qa: ingested {name} ({result.position:.0f} s, {result.segments} transcript segments) "
            f"at {result.speed:.1f}x real time",
            file=sys.stderr,
            flush=True,
        )
    with store.catalog.session() as session:
        stream_id = session.scalar(select(Stream.id).where(Stream.name == name))
        lines = session.scalars(
            select(TranscriptSegment)
            .where(TranscriptSegment.stream_id == stream_id)
            .order_by(TranscriptSegment.t0)
        ).all()
        info["transcript"] = [{"t0": r.t0, "t1": r.t1, "text": r.text} for r in lines]
    return info


def _hit(t0: float, t1: float, truth: qs.Placed) -> bool:
    return t0 <= truth.t1 + TOLERANCE_S and t1 >= truth.t0 - TOLERANCE_S


def _key_words(stream: qs.StreamPlan, transcript: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per question, the key words of its true evidence: the content words of what Whisper heard in the
    truth's span (speech), or the spliced clip's name (visual: "teapot", "dice")."""
    out = {}
    for question in stream.recipe.questions:
        truth = stream.truth(question)
        if question.kind == "visual":
            out[question.text] = [question.target]
            continue
        heard = " ".join(r["text"] for r in transcript if r["t0"] <= truth.t1 + 1 and r["t1"] >= truth.t0 - 1)
        out[question.text] = sorted(_content_words(heard))
    return out


def _content_words(text: str) -> set[str]:
    found = {w.lower().strip("'") for w in re.findall(r"[A-Za-z']+", text)}
    return {_stem(w) for w in found if len(w) >= 3 and w not in STOP_WORDS}


def _stem(word: str) -> str:
    """A crude fold of plurals and tenses: "saved" and "save", "calls" and "call" match."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


class _MemoryWatch:
    """Resident memory of this process from now until `stop`: at the start, and its peak (sampled 20/s)."""

    def __init__(self) -> None:
        try:
            import psutil
        except ImportError:  # the figures are then absent, not wrong
            self.process = None
            return
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def stop(self) -> dict[str, float] | None:
        if self.process is None:
            return None
        self.done.set()
        self.thread.join()
        return {"rss_start": self.start / 2**20, "rss_peak": self.peak / 2**20}


def _question(
    toolkit: VideoMemoryToolkit,
    agent: VideoAgent,
    stream: qs.StreamPlan,
    question: qs.Question,
    key_words: list[str],
) -> dict[str, Any]:
    name, truth = stream.recipe.name, stream.truth(question)
    started = time.perf_counter()
    hits = toolkit.view.search(question.text, stream=name, k=SEARCH_K)
    search_s = time.perf_counter() - started
    rank = next((i + 1 for i, h in enumerate(hits) if _hit(h.t0, h.t1, truth)), None)
    started = time.perf_counter()
    answer = agent.ask(question.text, stream=name)
    ask_s = time.perf_counter() - started
    cited = [c for c in answer.citations if c.stream == name]
    spans = [(c.t0, c.t1) for c in answer.citations]
    model_text = next((st["model"] for st in reversed(answer.steps) if "model" in st), "")
    named = sorted(set(key_words) & _content_words(answer.answer))
    return {
        "stream": name,
        "question": question.text,
        "kind": question.kind,
        "style": question.style,
        "target": question.target,
        "truth": [truth.t0, truth.t1],
        "search": {
            "seconds": search_s,
            "rank": rank,
            "top1": rank == 1,
            "top5": rank is not None,
            "moments": [
                {"t0": h.t0, "t1": h.t1, "score": h.score, "modality": h.modality, "evidence": h.evidence[:3]}
                for h in hits
            ],
        },
        "ask": {
            "seconds": ask_s,
            "right": any(_hit(c.t0, c.t1, truth) for c in cited),
            "answer": answer.answer,
            "citations": [[c.stream, c.t0, c.t1] for c in answer.citations],
            "model_text": model_text,
            "times_inside": times_inside(answer.answer, spans),
            "model_times_inside": times_inside(model_text, spans),
            "dropped": [d["reason"] for st in answer.steps for d in st.get("dropped", [])],
            "key_words": key_words,
            "key_words_named": named,
        },
    }


class _FullLength(LocalChatModel):
    """The embedded model made to write all of its `max_new_tokens` (end of text forbidden until then)."""

    def _generation_kwargs(self, stop: list[str] | None) -> dict[str, Any]:
        return {**super()._generation_kwargs(stop), "min_new_tokens": self.max_new_tokens}


def _paragraph(agent: VideoAgent, stream: str, kind: str) -> dict[str, Any]:
    """One ask for a paragraph: the answer as the model writes it, or made to run to full length."""
    started = time.perf_counter()
    answer = agent.ask(PARAGRAPH_QUESTION, stream=stream)
    seconds = time.perf_counter() - started
    text = answer.answer
    print(
        f"bench qa: {stream}: paragraph, {kind}: {len(text.split())} words in {seconds:.1f} s",
        file=sys.stderr,
    )
    return {"stream": stream, "kind": kind, "seconds": seconds, "words": len(text.split()), "answer": text}


def _text_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Shares of answers whose text is sound: every written time inside a citation (after the agent's check,
    and as the model wrote it), and naming at least one key word of the true evidence."""
    n = len(rows)
    return {
        "times_inside": sum(r["ask"]["times_inside"] for r in rows) / n,
        "model_times_inside": sum(r["ask"]["model_times_inside"] for r in rows) / n,
        "sentences_dropped": float(sum(len(r["ask"]["dropped"]) for r in rows)),
        "answers_with_a_sentence_dropped": sum(bool(r["ask"]["dropped"]) for r in rows) / n,
        "key_word_named": sum(bool(r["ask"]["key_words_named"]) for r in rows) / n,
        "key_words_named_share": float(
            np.mean([len(r["ask"]["key_words_named"]) / max(1, len(r["ask"]["key_words"])) for r in rows])
        ),
    }


def _progress(row: dict[str, Any], llm: str) -> None:
    search = "top-1" if row["search"]["top1"] else ("top-5" if row["search"]["top5"] else "miss")
    ask = "right" if row["ask"]["right"] else "wrong"
    print(
        f"bench qa [{llm}]: {row['stream']}: {row['question']} search {search}, ask {ask} "
        f"({row['ask']['seconds']:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=float)
    return {
        "p50": float(np.percentile(array, 50)),
        "p95": float(np.percentile(array, 95)),
        "max": float(array.max()),
        "mean": float(array.mean()),
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Shares of right answers: overall, per kind (speech, visual) and per style of speech question."""
    groups: dict[str, list[dict[str, Any]]] = {"all": rows}
    for row in rows:
        groups.setdefault(row["kind"], []).append(row)
        if row["kind"] == "speech":
            groups.setdefault(f"speech, {row['style']}", []).append(row)
    out = {}
    for name, group in groups.items():
        n = len(group)
        out[name] = {
            "questions": n,
            "search_top1": sum(r["search"]["top1"] for r in group) / n,
            "search_top5": sum(r["search"]["top5"] for r in group) / n,
            "ask": sum(r["ask"]["right"] for r in group) / n,
        }
    return out


def _stream_info(stream: qs.StreamPlan, path: Path) -> dict[str, Any]:
    return {
        "name": stream.recipe.name,
        "seconds": stream.recipe.seconds,
        "file": str(path),
        "prompts": [[p.what, p.t0, p.t1] for p in stream.prompts],
        "inserts": [[p.what, p.t0, p.t1] for p in stream.inserts],
        "questions": len(stream.recipe.questions),
    }


def _model_row(name: str, m: dict[str, Any]) -> list[str]:
    text, lat, mem = m["text"], m["ask_latency_s"], m.get("memory_mb")
    return [
        name,
        f"{100 * m['summary']['all']['ask']:.0f} %",
        f"{100 * text['times_inside']:.0f} %",
        f"{100 * text['model_times_inside']:.0f} %",
        f"{100 * text['key_word_named']:.0f} %",
        f"{100 * text['key_words_named_share']:.0f} %",
        f"{lat['p50']:.1f} / {lat['p95']:.1f}",
        f"{m['weights_mb']:.0f}",
        f"{mem['rss_peak']:.0f}" if mem else "-",
    ]


def _span(t0: float, t1: float) -> str:
    return f"{hms(t0)}-{hms(t1)}"


def render(result: dict[str, Any]) -> str:
    rows = []
    for r in result["questions"]:
        best = r["search"]["moments"][0] if r["search"]["moments"] else None
        rank = r["search"]["rank"]
        rows.append(
            [
                r["stream"],
                r["question"] if len(r["question"]) <= 60 else r["question"][:59] + "…",
                _span(*r["truth"]),
                f"{_span(best['t0'], best['t1'])} {best['modality'][0]}" if best else "none",
                str(rank) if rank else "-",
                ", ".join(_span(c[1], c[2]) for c in r["ask"]["citations"]) or "none",
                "right" if r["ask"]["right"] else "wrong",
                f"{r['ask']['seconds']:.1f}",
            ]
        )
    shares = [
        [
            name,
            str(s["questions"]),
            f"{100 * s['search_top1']:.0f} %",
            f"{100 * s['search_top5']:.0f} %",
            f"{100 * s['ask']:.0f} %",
        ]
        for name, s in result["summary"].items()
    ]
    lat, words, search_ms = result["ask_latency_s"], result["answer_words"], result["search_latency_ms"]
    ingest = [
        f"{i['stream']} " + ("cached" if i["cached"] else f"ingested at {i['speed']:.1f}x real time")
        for i in result["ingest"]
    ]
    loading = result["loading_s"]
    streams = ", ".join(f"{s['name']} ({s['seconds'] / 60:.0f} min)" for s in result["streams"])
    return "\n".join(
        [
            f"bench qa{' (quick)' if result['quick'] else ''}: {len(result['questions'])} questions over "
            f"{streams}; right = within ±{result['tolerance_s']:.0f} s of the truth",
            render_environment(result["environment"]),
            f"streams: {'; '.join(ingest)}; encoders loaded in {loading['encoders']:.1f} s, "
            f"{result['llm']} in "
            f"{loading['chat_model']:.1f} s, warm-up ask {loading['warmup_ask']:.1f} s",
            "",
            format_table(
                ["stream", "question", "truth", "search top-1", "rank", "ask cites", "ask", "ask s"], rows
            ),
            "",
            format_table(["questions", "n", "search top-1", "search top-5", "ask"], shares),
            "",
            f"ask latency: p50 {lat['p50']:.1f} s, p95 {lat['p95']:.1f} s, max {lat['max']:.1f} s; answers "
            f"{words['p50']:.0f} words at p50, {words['max']:.0f} at most; search p50 "
            f"{search_ms['p50']:.0f} ms, p95 {search_ms['p95']:.0f} ms",
            "",
            format_table(
                ["paragraph ask", "stream", "words", "seconds"],
                [
                    [x["kind"], x["stream"], str(x["words"]), f"{x['seconds']:.1f}"]
                    for x in result["paragraphs"]
                ],
            ),
            f"({PARAGRAPH_QUESTION!r}; full length: end of text forbidden before "
            f"{AgentConfig().max_new_tokens} new tokens, the agent's limit)",
            "",
            format_table(
                [
                    "model",
                    "ask right",
                    "times inside citations",
                    "as the model wrote",
                    "names a key word",
                    "key words named",
                    "ask p50 / p95 s",
                    "weights MB",
                    "RSS peak MB",
                ],
                [_model_row(name, m) for name, m in result["models"].items()],
            ),
            "(times inside: every time the answer's text writes lies inside one of its citations, ±1 s; "
            "as the model wrote: the same test on the model's text before the agent's check; key words: "
            "content words of what Whisper heard at the truth, or the clip's name)",
            "",
            render_targets(result["targets"]),
            "",
            f"load average {render_loadavg(result['loadavg']['start'])} at start, "
            f"{render_loadavg(result['loadavg']['end'])} at end; ran in {result['seconds']:.0f} s",
        ]
    )
