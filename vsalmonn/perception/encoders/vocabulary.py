"""Scene, action and style words for the default vision path's grounding in text space (issue 18).

The default encoder (vision.py) places a frame in text space through the names of the ImageNet classes it
predicts: a frame "is" a weighted sum of 1000 class-name embeddings. Those names are objects, animals and
food, so a query for a scene ("a kitchen"), an action ("a man taking a photograph") or a style ("a cartoon")
matches a frame only as far as the text encoder happens to relate the words to the class names.

A classifier that sees a refrigerator, a stove and a microwave sees a kitchen, though. Each entry below is a
phrase and the ImageNet classes that are evidence for it; grounding with the vocabulary adds the phrase's
embedding to the text vector of each of its classes (`grounding_rows`), so a frame predicted "stove" lands
nearer "a kitchen" and "someone cooking" too. Nothing about the network changes, and frames whose classes no
phrase names are grounded exactly as before, up to the renormalisation of the centred mix.

The entries were written from general knowledge of what each class shows (scenes of everyday life, sports,
places, nature, pictures that are drawings or documents), not from the predictions on any benchmark frame.
Classes are named by their first WordNet lemma as in `imagenet_classes.txt`; `resolve` refuses a name that
is not a class, so a typo cannot silently drop evidence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# (phrase, classes that are evidence for it). Phrases describe scenes, actions and kinds of picture.
VOCABULARY: tuple[tuple[str, tuple[str, ...]], ...] = (
    # -- rooms and buildings
    (
        "a kitchen",
        (
            "refrigerator",
            "microwave",
            "stove",
            "dishwasher",
            "toaster",
            "Dutch oven",
            "wok",
            "frying pan",
            "Crock Pot",
            "espresso maker",
            "mixing bowl",
            "spatula",
            "wooden spoon",
            "ladle",
            "plate rack",
            "dishrag",
            "caldron",
            "coffeepot",
            "teapot",
            "pitcher",
        ),
    ),
    (
        "someone cooking food",
        (
            "stove",
            "frying pan",
            "wok",
            "Dutch oven",
            "caldron",
            "spatula",
            "wooden spoon",
            "ladle",
            "mixing bowl",
            "Crock Pot",
        ),
    ),
    (
        "a meal on a table",
        (
            "plate",
            "soup bowl",
            "tray",
            "goblet",
            "wine bottle",
            "dining table",
            "restaurant",
            "consomme",
            "hot pot",
            "carbonara",
            "pizza",
            "cheeseburger",
            "meat loaf",
            "potpie",
            "burrito",
            "guacamole",
            "trifle",
            "ice cream",
        ),
    ),
    (
        "breakfast in a café",
        (
            "espresso",
            "cup",
            "coffee mug",
            "espresso maker",
            "bagel",
            "French loaf",
            "eggnog",
            "coffeepot",
            "restaurant",
            "dining table",
            "tray",
        ),
    ),
    (
        "a bathroom",
        (
            "bathtub",
            "shower curtain",
            "toilet seat",
            "washbasin",
            "soap dispenser",
            "toilet tissue",
            "medicine chest",
            "tub",
            "shower cap",
            "bath towel",
        ),
    ),
    (
        "a bedroom",
        ("four-poster", "quilt", "pillow", "wardrobe", "window shade", "cradle", "crib", "sleeping bag"),
    ),
    (
        "a living room",
        (
            "studio couch",
            "entertainment center",
            "home theater",
            "rocking chair",
            "table lamp",
            "television",
            "folding chair",
            "lampshade",
            "window shade",
        ),
    ),
    (
        "an office with computers",
        (
            "desk",
            "desktop computer",
            "monitor",
            "computer keyboard",
            "mouse",
            "notebook",
            "photocopier",
            "printer",
            "file",
            "laptop",
            "screen",
        ),
    ),
    ("a library of books", ("library", "bookshop", "bookcase", "book jacket")),
    (
        "a shop",
        (
            "grocery store",
            "toyshop",
            "shoe shop",
            "bookshop",
            "tobacco shop",
            "confectionery",
            "butcher shop",
            "bakery",
            "barbershop",
            "shopping cart",
            "shopping basket",
        ),
    ),
    (
        "a temple or a church",
        (
            "stupa",
            "monastery",
            "church",
            "mosque",
            "bell cote",
            "altar",
            "palace",
            "dome",
            "prayer rug",
            "pedestal",
        ),
    ),
    (
        "historic buildings",
        (
            "palace",
            "castle",
            "triumphal arch",
            "obelisk",
            "dome",
            "monastery",
            "church",
            "mosque",
            "stupa",
            "bell cote",
            "megalith",
        ),
    ),
    (
        "a brick or stone wall",
        (
            "stone wall",
            "prison",
            "worm fence",
            "chainlink fence",
            "picket fence",
            "sliding door",
            "window screen",
            "honeycomb",
        ),
    ),
    (
        "a hospital or a doctor",
        (
            "stethoscope",
            "syringe",
            "lab coat",
            "pill bottle",
            "neck brace",
            "crutch",
            "stretcher",
            "oxygen mask",
        ),
    ),
    ("a laboratory", ("beaker", "Petri dish", "lab coat", "syringe", "oscilloscope")),
    # -- outdoors
    (
        "a city street",
        (
            "street sign",
            "traffic light",
            "cab",
            "trolleybus",
            "streetcar",
            "parking meter",
            "police van",
            "minibus",
            "moving van",
            "fire engine",
            "mailbox",
            "manhole cover",
        ),
    ),
    (
        "cars on a road",
        (
            "sports car",
            "convertible",
            "minivan",
            "jeep",
            "limousine",
            "pickup",
            "car wheel",
            "racer",
            "police van",
            "cab",
            "beach wagon",
            "grille",
        ),
    ),
    (
        "a beach by the sea",
        (
            "seashore",
            "sandbar",
            "swimming trunks",
            "sunscreen",
            "bikini",
            "promontory",
            "breakwater",
            "catamaran",
        ),
    ),
    (
        "boats in a harbour",
        (
            "speedboat",
            "liner",
            "container ship",
            "dock",
            "breakwater",
            "lifeboat",
            "schooner",
            "yawl",
            "catamaran",
            "trimaran",
            "fireboat",
            "pirate",
        ),
    ),
    ("a lake", ("lakeside", "canoe", "paddle", "boathouse", "dock")),
    ("mountains and a landscape", ("alp", "valley", "volcano", "cliff", "promontory", "geyser")),
    (
        "a garden with flowers",
        (
            "daisy",
            "yellow lady's slipper",
            "pot",
            "greenhouse",
            "lawn mower",
            "picket fence",
            "rapeseed",
            "hip",
            "bee",
            "park bench",
            "patio",
        ),
    ),
    ("a lawn of grass", ("lawn mower", "hay", "park bench", "golf ball", "croquet ball", "rapeseed")),
    (
        "a farm in the countryside",
        ("hay", "harvester", "thresher", "plow", "ox", "barn", "worm fence", "tractor", "ram"),
    ),
    (
        "underwater in the sea",
        (
            "coral reef",
            "scuba diver",
            "snorkel",
            "sea anemone",
            "brain coral",
            "jellyfish",
            "puffer",
            "anemone fish",
            "sea urchin",
            "starfish",
        ),
    ),
    ("snow in winter", ("ski", "snowmobile", "dogsled", "bobsled", "snowplow", "alp", "mitten")),
    (
        "outer space and the night sky",
        ("planetarium", "space shuttle", "projectile", "missile", "radio telescope"),
    ),
    (
        "a sports game in a stadium",
        (
            "scoreboard",
            "football helmet",
            "rugby ball",
            "basketball",
            "soccer ball",
            "volleyball",
            "baseball",
            "ballplayer",
            "racket",
            "tennis ball",
        ),
    ),
    (
        "a concert on a stage",
        (
            "stage",
            "spotlight",
            "electric guitar",
            "drum",
            "theater curtain",
            "microphone",
            "loudspeaker",
            "grand piano",
        ),
    ),
    ("a cinema or a theatre", ("cinema", "theater curtain", "home theater", "stage", "spotlight")),
    # -- actions
    ("a person running", ("running shoe", "sweatshirt", "jersey", "racer")),
    ("someone taking a photograph", ("reflex camera", "Polaroid camera", "tripod", "lens cap")),
    (
        "someone playing music",
        (
            "acoustic guitar",
            "electric guitar",
            "violin",
            "cello",
            "grand piano",
            "upright",
            "drum",
            "sax",
            "cornet",
            "trombone",
            "banjo",
            "harmonica",
            "accordion",
            "flute",
            "oboe",
            "harp",
            "marimba",
            "steel drum",
        ),
    ),
    ("people swimming or diving", ("swimming trunks", "snorkel", "scuba diver", "bathing cap", "maillot")),
    ("someone riding a bicycle", ("mountain bike", "bicycle-built-for-two", "tricycle", "unicycle")),
    ("someone skiing", ("ski", "alp", "bobsled")),
    ("someone reading", ("book jacket", "library", "bookshop", "comic book")),
    (
        "someone typing on a computer",
        ("computer keyboard", "laptop", "typewriter keyboard", "mouse", "space bar", "notebook"),
    ),
    ("someone sleeping", ("four-poster", "quilt", "pillow", "sleeping bag", "cradle")),
    ("someone cleaning", ("broom", "swab", "vacuum", "washer", "bucket")),
    ("people shopping", ("shopping cart", "shopping basket", "grocery store", "purse")),
    ("a person in uniform", ("military uniform", "pickelhaube", "bearskin", "mortarboard", "academic gown")),
    # -- kinds of picture
    ("a cartoon or a comic drawing", ("comic book", "jigsaw puzzle", "book jacket", "web site")),
    (
        "a page of text or a document",
        (
            "menu",
            "envelope",
            "book jacket",
            "web site",
            "crossword puzzle",
            "binder",
            "notebook",
            "packet",
            "rule",
        ),
    ),
    ("a computer screen", ("screen", "monitor", "web site", "desktop computer", "laptop", "television")),
    (
        "a pattern or a texture",
        ("honeycomb", "chain mail", "maze", "jigsaw puzzle", "doormat", "dishrag", "velvet", "wool"),
    ),
)


def resolve(
    class_names: Sequence[str], vocabulary: Sequence[tuple[str, Sequence[str]]] = VOCABULARY
) -> list[tuple[str, list[int]]]:
    """Each phrase with the indices of its classes in `class_names` (first WordNet lemmas, in the
    classifier's order); ValueError naming an entry's class that is not among them."""
    index = {name.split(",")[0].strip().lower(): i for i, name in enumerate(class_names)}
    out = []
    for phrase, members in vocabulary:
        missing = [m for m in members if m.lower() not in index]
        if missing:
            raise ValueError(f"vocabulary entry {phrase!r} names unknown ImageNet classes: {missing}")
        out.append((phrase, [index[m.lower()] for m in members]))
    return out


def grounding_rows(
    labels: np.ndarray, phrases: np.ndarray, members: Sequence[Sequence[int]], weight: float = 1.0
) -> np.ndarray:
    """(C, d) unit rows: each class's name embedding plus `weight` times those of the phrases it is evidence
    for, renormalised. `labels` (C, d) and `phrases` (V, d) are unit rows; `members[v]` lists phrase v's
    classes. A class no phrase names keeps its row."""
    rows = np.array(labels, dtype=np.float64, copy=True)  # (C, d)
    for v, classes in enumerate(members):
        rows[list(classes)] += weight * phrases[v]
    rows /= np.linalg.norm(rows, axis=1, keepdims=True).clip(1e-12)
    return rows.astype(np.float32)  # (C, d)


def grounding_vocabulary() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The shipped vocabulary (a function, so a setting can later choose another)."""
    return VOCABULARY
