"""Refusals several commands make before they read a store: a data directory with no catalog must not be
taken for an empty memory, nor created by a mistyped --data."""

from __future__ import annotations

from vsalmonn.cli.output import UsageError
from vsalmonn.settings import Settings


def require_catalog(settings: Settings) -> None:
    """UsageError unless the data directory holds a catalog (a mistyped --data must not create one)."""
    from vsalmonn.memory_store.catalog import Catalog, CatalogError
    from vsalmonn.memory_store.store import CATALOG_FILE, StoreError, refuse_lost_catalog

    if settings.store.catalog_url is None:
        try:  # a catalog lost (missing, 0 bytes) over checkpoint groups is not "nothing ingested"
            refuse_lost_catalog(settings.data_dir, settings.data_dir / CATALOG_FILE)
        except StoreError as exc:
            raise UsageError(str(exc)) from None
    try:
        Catalog.for_data_dir(
            settings.data_dir, settings.store.catalog_target(), busy_timeout_s=settings.store.busy_timeout_s,
            create=False, read_only=True,
        ).close()  # fmt: skip
    except CatalogError as exc:
        if (settings.data_dir / CATALOG_FILE).exists() or settings.store.catalog_url is not None:
            raise UsageError(f"{exc} (see 'vsalmonn store check')") from None
        raise UsageError(f"{exc} (nothing has been ingested into {settings.data_dir})") from None
