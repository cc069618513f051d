"""The search path's record cache follows the change feed: another process's edits show after a look."""

from __future__ import annotations

import numpy as np

from lookalike.store.catalog import Catalog, NewImage
from lookalike.store.catalog.cache import RecordCache


def add(cat: Catalog, n: int, source: str, label: str | None = None, new: bool = True) -> int:
    vec = np.full(4, 0.5, dtype=np.float32) if new else None
    return cat.add_batch([NewImage(f"{n:064x}", source, label, 1, 1, "JPEG", 1, 1, 1, vec)]).rows[0][1]


def test_edits_by_another_process_show_after_following_the_feed(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    mine, other = Catalog.open(url), Catalog.open(url)
    a, b = add(mine, 1, "/x/1.jpg"), add(mine, 2, "/x/2.jpg")
    cache = RecordCache(mine)
    assert cache.get_many([a, b])[a].label is None
    add(other, 1, "/y/1.jpg", label="cat", new=False)  # a labelled copy: first label, one more source
    other.remove_images([b])
    assert cache.get_many([a, b])[a].label is None and b in cache.get_many([b])  # not looked yet: cached
    cache.follow()
    fresh = cache.get_many([a, b])
    assert fresh[a].label == "cat" and set(fresh[a].sources) == {"/x/1.jpg", "/y/1.jpg"} and b not in fresh
    other.remove_sources(["/y/1.jpg"])
    cache.follow()
    assert cache.get_many([a])[a].sources == ("/x/1.jpg",)


def test_a_read_that_raced_an_eviction_is_not_kept(tmp_path) -> None:
    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.sqlite'}")
    a = add(cat, 1, "/x/1.jpg")
    cache = RecordCache(cat)
    read = cat.get_many

    def slow_read(ids):
        records = read(ids)  # the old state ...
        add(cat, 1, "/y/1.jpg", label="dog", new=False)  # ... changes meanwhile ...
        cache.follow()  # ... and the eviction runs before the reader stores what it read
        return records

    cat.get_many = slow_read
    assert cache.get_many([a])[a].label is None
    cat.get_many = read
    assert cache.get_many([a])[a].label == "dog"  # the stale read was not cached


def test_a_cursor_behind_the_pruned_feed_clears_everything(tmp_path) -> None:
    cat = Catalog.open(f"sqlite:///{tmp_path / 'c.sqlite'}")
    a = add(cat, 1, "/x/1.jpg")
    cache = RecordCache(cat)
    cache.get_many([a])
    add(cat, 1, "/y/1.jpg", label="owl", new=False)
    add(cat, 2, "/x/2.jpg")
    cat.prune_changes(cat.last_seq(), older_than=0)
    cache.follow()
    assert cache.get_many([a])[a].label == "owl" and cache.cursor == cat.last_seq()
