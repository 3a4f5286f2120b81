"""Profile stores: atomic batch writes with a changelog checkpoint, on disk and in memory."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.store import MemoryStore, RocksStore, StoreError


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


def test_unwritable_directory_says_what_to_fix(tmp_path: Path) -> None:
    """A store path that cannot be created raises StoreError naming TOUCHFLOW_DATA_DIR."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="TOUCHFLOW_DATA_DIR"):
        RocksStore(blocker / "sub" / "p0")
