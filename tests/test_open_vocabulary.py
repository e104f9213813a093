"""Open vocabulary (issue 18): query terms weighed by how rarely they match the stream, and the scene and
action vocabulary of the default vision path's grounding. Small tensors only: fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vsalmonn.memory_store import MemoryConfig, StreamMemory
from vsalmonn.memory_store.reader import MIN_TERM_WEIGHT, background_weighted, query_terms, score
from vsalmonn.perception.encoders.vision import imagenet_classes, label_name
from vsalmonn.perception.encoders.vocabulary import VOCABULARY, grounding_rows, resolve

DIM = 16


def unit(*parts: tuple[int, float]) -> torch.Tensor:
    v = torch.zeros(DIM)
    for axis, value in parts:
        v[axis] = value
    return v / v.norm()


def street_stream(background: int = 95, needle: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of a street stream: `background` slots along axis 0 ("street") with a little of their own, and
    `needle` slots of a cartoon (axis 1) that also show something else (axis 2); and the query's terms
    [the whole query, "a cartoon man running", "a street"]."""
    gen = torch.Generator().manual_seed(0)
    street = [
        unit((0, 1.0), (3 + i % 10, 0.3)) + 0.01 * torch.randn(DIM, generator=gen) for i in range(background)
    ]
    cartoon = [unit((1, 1.0), (2, 0.8)) for _ in range(needle)]
    keys = torch.stack(street[:40] + cartoon + street[40:])  # (S, d): the needle at slots 40-44
    terms = torch.stack([unit((0, 1.0), (1, 1.0)), unit((1, 1.0)), unit((0, 1.0))])  # (3, d)
    return keys, terms


def test_a_term_the_background_matches_everywhere_counts_little() -> None:
    keys, terms = street_stream()
    plain = score(terms[:1], keys)  # the whole query alone: the street wins
    assert int(plain.argmax()) not in range(40, 45)
    weighted = score(background_weighted(terms, keys), keys)
    assert set(torch.topk(weighted, 5).indices.tolist()) == set(range(40, 45))


def test_the_weights_follow_each_terms_frequency_in_the_stream() -> None:
    keys, terms = street_stream()
    prompt = background_weighted(terms[1:], keys)[0]  # ("a cartoon man running", "a street")
    # "a street" is in the upper half of its range on 95 % of the slots: weight 0.05 against 0.95
    cartoon, street = float(prompt[1]), float(prompt[0])
    assert cartoon / street == pytest.approx(0.95 / max(0.05, MIN_TERM_WEIGHT), rel=0.05)
    # A stream of only street: every term's frequency is high, the floor keeps the prompt defined.
    only_street = torch.cat([keys[:40], keys[45:]])
    assert torch.isfinite(background_weighted(terms, only_street)).all()


def test_one_term_or_no_slots_reads_the_query_as_it_is() -> None:
    keys, terms = street_stream()
    one = background_weighted(terms[:1], keys)
    assert torch.allclose(one, terms[:1])
    assert torch.allclose(
        background_weighted(terms, keys[:0]), torch.nn.functional.normalize(terms, dim=1).mean(0)
    )


def test_memory_read_with_terms_finds_the_rare_part_of_the_query() -> None:
    keys, terms = street_stream()
    memory = StreamMemory(MemoryConfig(dim=DIM, heads=2, ttt=False))
    t = torch.arange(keys.shape[0], dtype=torch.float64)
    memory.write(keys.numpy(), t.numpy(), (t + 1).numpy(), modality="visual")
    memory.flush()
    plain = memory.read(terms[:1].numpy(), k=1, modality="visual")
    weighted = memory.read(terms[:1].numpy(), k=1, modality="visual", terms=terms.numpy())
    assert not (40 <= plain[0].t0 < 45)
    assert 40 <= weighted[0].t0 < 45 and weighted[0].t1 <= 45
    with pytest.raises(ValueError, match="terms must have shape"):
        memory.read(terms[:1].numpy(), terms=np.zeros((2, DIM + 1), np.float32))


def test_query_terms_cut_at_joining_words_and_keep_the_whole_query_first() -> None:
    assert query_terms("a cartoon man running down a street") == [
        "a cartoon man running down a street",
        "a cartoon man running",
        "a street",
    ]
    assert query_terms("a brick wall") == ["a brick wall"]
    assert query_terms("people in the rain") == ["people in the rain", "people", "the rain"]


def test_every_vocabulary_entry_names_real_imagenet_classes() -> None:
    names = [label_name(lemmas) for _, lemmas in imagenet_classes()]
    entries = resolve(names)
    assert len(entries) == len(VOCABULARY) and all(members for _, members in entries)
    with pytest.raises(ValueError, match="unknown ImageNet classes"):
        resolve(names, [("a kitchen", ("refrigerator", "kitchen sink that is no class"))])


def test_grounding_moves_a_class_towards_its_phrases_and_leaves_the_others() -> None:
    labels = np.eye(4, DIM, dtype=np.float32)  # (4, d): four classes
    phrases = np.eye(1, DIM, k=5, dtype=np.float32)  # (1, d): one phrase
    rows = grounding_rows(labels, phrases, [[0, 2]])
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0)
    assert rows[0] @ phrases[0] == pytest.approx(2**-0.5) and rows[2] @ phrases[0] == pytest.approx(2**-0.5)
    assert np.array_equal(rows[1], labels[1]) and np.array_equal(rows[3], labels[3])
