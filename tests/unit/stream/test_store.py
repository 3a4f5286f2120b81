"""Profile stores: atomic batch writes with a changelog checkpoint, on disk and in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.stream.store import MemoryStore, RocksStore, StoreError


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_write_read_delete_and_checkpoint(kind: str, tmp_path: Path) -> None:
    """Writes and tombstones apply together with the checkpoint; counts follow."""
    store = MemoryStore() if kind == "memory" else RocksStore(tmp_path / "p0")
    assert store.checkpoint() == -1
    store.write({b"a": b"1", b"b": b"2"}, 5)
    assert store.get(b"a") == b"1" and store.count() == 2 and store.checkpoint() == 5
    store.write({b"a": None, b"c": b"3"}, 7)
    assert store.get(b"a") is None and store.count() == 2 and store.checkpoint() == 7
    assert sorted(store.keys()) == [b"b", b"c"]
    store.close()


def test_rocksdb_survives_reopen(tmp_path: Path) -> None:
    """A reopened RocksDB store has its profiles, count and checkpoint back."""
    store = RocksStore(tmp_path / "p1")
    store.write({b"k": b"v"}, 41)
    store.close()
    again = RocksStore(tmp_path / "p1")
    assert again.get(b"k") == b"v" and again.checkpoint() == 41 and again.count() == 1
    again.close()


def test_rocksdb_lookups_with_bloom_filters_find_every_key_and_no_absent_one(
        tmp_path: Path) -> None:
    """With the bloom filters on (memtable and tables), 5,000 keys written, flushed to a table
    by a close and read back after a reopen are all found with their values, deleted ones and
    5,000 never written are not: a filter may only ever spare a lookup, never answer wrong."""
    store = RocksStore(tmp_path / "p0")
    store.write({b"k%d" % n: b"v%d" % n for n in range(5_000)}, 1)
    store.write({b"k%d" % n: None for n in range(0, 5_000, 7)}, 2)
    store.close()
    store = RocksStore(tmp_path / "p0")
    try:
        for n in range(5_000):
            assert store.get(b"k%d" % n) == (None if n % 7 == 0 else b"v%d" % n)
        assert all(store.get(b"absent-%d" % n) is None for n in range(5_000))
        assert store.count() == 5_000 - len(range(0, 5_000, 7))
    finally:
        store.close()


def test_unwritable_directory_says_what_to_fix(tmp_path: Path) -> None:
    """A store path that cannot be created raises StoreError naming TOUCHFLOW_DATA_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="TOUCHFLOW_DATA_DIR"):
        RocksStore(blocker / "sub" / "p0")


def test_rocksdb_writes_skip_the_wal_and_a_crash_falls_back_to_a_consistent_checkpoint(
    tmp_path: Path,
) -> None:
    """Batches do not go to RocksDB's write-ahead log (the changelog is the durable copy);
    a process killed after an unflushed batch reopens at the last flushed batch, profiles and
    checkpoint together (recovery then replays the changelog from there), never with a
    profile newer than its checkpoint."""
    import os
    import subprocess
    import sys
    import textwrap

    path = tmp_path / "p2"
    script = textwrap.dedent(f"""\
        import os
        from pathlib import Path
        from service.stream.store import RocksStore
        store = RocksStore(Path({str(path)!r}))
        store.write({{b"k": b"first", b"gone": b"1"}}, 10)
        store._db.flush()
        store.write({{b"k": b"second", b"gone": None, b"new": b"2"}}, 20)
        logs = [p for p in Path({str(path)!r}).iterdir() if p.suffix == ".log"]
        assert logs and all(p.stat().st_size == 0 for p in logs), logs
        os._exit(9)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[3],
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 9, done.stderr
    store = RocksStore(path)
    assert store.checkpoint() == 10
    assert store.get(b"k") == b"first" and store.get(b"gone") == b"1"
    assert store.get(b"new") is None
    store.close()


@pytest.mark.parametrize("kind", ["memory", "rocksdb"])
def test_writes_without_lookups_are_counted_right_by_a_recount(kind: str,
                                                              tmp_path: Path) -> None:
    """Recovery into an empty store writes with `existing` empty (no lookup per key), so a
    key written in two windows, or deleted, is miscounted until `recount()`, which counts
    the profiles exactly (the store's own entries, like the checkpoint, are not profiles)."""
    store = MemoryStore() if kind == "memory" else RocksStore(tmp_path / "p0")
    nothing: frozenset[bytes] = frozenset()
    store.write({b"a": b"1", b"b": b"2", b"\x00touchflow:learning": b"{}"}, 3, nothing)
    store.write({b"a": b"1'", b"b": None, b"c": b"3"}, 6, nothing)
    store.recount()
    assert store.count() == 2 and sorted(store.keys()) == [b"a", b"c"]
    assert store.get(b"a") == b"1'" and store.checkpoint() == 6
    store.close()
