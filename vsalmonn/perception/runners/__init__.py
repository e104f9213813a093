"""Source kinds as registered runners: one small class per kind of source, all found through one registry.

- `base`: the interface (`KindRunner`: recognise, run and resume, report progress) and `RunContext`.
- `file`, `folder`, `live` (URLs and capture devices), `plugin` (a plugin's `register_sources` scheme).
- `registry`: `KindRegistry`, the one lookup for built-in and plugins' kinds; `SOURCE_KINDS`, the built-ins.
"""

from .base import KindRunner, RunContext
from .registry import SOURCE_KINDS, KindRegistry, builtin_kinds

__all__ = ["SOURCE_KINDS", "KindRegistry", "KindRunner", "RunContext", "builtin_kinds"]
