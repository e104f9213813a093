"""Benchmarks of DESIGN §10, one module per benchmark, run as ``vsalmonn bench NAME``.

Each module exposes ``run(quick: bool) -> dict`` (JSON-serialisable figures) and ``render(result) -> str``
(a table). bench/ is not installed with the package: benchmarks need a source checkout.
"""
