"""Named queries over the catalog's rows, one module per concern, so that no other component opens a session.

The catalog (`..catalog.Catalog`) owns connections and transactions; these modules own the questions asked
of its tables: what was said (`transcript`), what was seen (`labels`), what happened (`events`), how far each
watched file is ingested (`ingest`), what each ingesting process last reported (`status`), and which rows a
restart must remove (`resume`). Each function takes the catalog and plain values and returns detached ORM
rows (columns loaded, relationships not) or small frozen values; each opens its own short session, so a
caller never holds one. Readers pass `before` (a stream's committed offset) where rows past it are work in
progress that a restart of the writer removes.
"""
