"""People across the catalogue: link per-video clusters of the BASE embedding space into persons, incrementally.

    represent.py   one row per cluster: representative embedding, screen time, thumbnail crop
    candidates.py  nearest clusters of other videos (exact, or faiss IVF re-scored exactly)
    link.py        the linking rule and the threshold it sets from the catalogue
    assign.py      links -> persons without chaining strangers; stable ids
    decisions.py   the archivist's append-only log (name, merge, split)
    lease.py       one writer at a time (flock locally, a conditional-PUT lease on S3)
    store.py       generations + CURRENT.json pointer (atomic updates)
    index.py       the incremental update
    query.py       reading the index: list persons, search by photo
    page.py        the catalogue page of persons (HTML)
"""

from vcn.persons.index import UpdateReport, update_index

__all__ = ["UpdateReport", "update_index"]
