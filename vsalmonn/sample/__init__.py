"""The demo's bundled sample: 30 s of real street footage with four real spoken prompts (see LICENSES.md).

Built by scripts/make_sample.py from the project's shared media; `sample.json` says where each prompt is and
which questions the demo asks about it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def clip() -> Path:
    """The sample video (H.264 384x288 at 5 fps, AAC 16 kHz mono)."""
    return HERE / "street-talk.mp4"


def description() -> dict[str, Any]:
    """sample.json: the prompts placed in the audio and the demo's questions with their true spans."""
    return json.loads((HERE / "sample.json").read_text())
