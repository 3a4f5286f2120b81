"""IdRing, the remembered event ids of a profile, against the ordered dict it replaced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.idring import IdRing


def test_membership_counts_only_whole_aligned_digests() -> None:
    """A probe that occurs in the buffer but not at an entry's start (across a digest and
    its time) is not remembered; the digests themselves are, and a probe that is not 8 bytes
    long never is."""
    ring = IdRing()
    ring.add(b"AAAABBBB", 0x4444444443434343)  # its time bytes: CCCCDDDD, little-endian
    assert ring.has(b"AAAABBBB")
    assert ring.find(b"BBBBCCCC") >= 0 and not ring.has(b"BBBBCCCC")
    assert ring.find(b"CCCCDDDD") >= 0 and not ring.has(b"CCCCDDDD")
    ring.add(b"CCCCDDDD", 7)  # now it is, at an aligned offset after the misaligned hit
    assert ring.has(b"CCCCDDDD")
    assert not ring.has(b"AAAA")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=8, max_size=8), st.integers(0, 2**47)),
                max_size=80),
       st.integers(1, 64))
def test_ring_behaves_like_an_ordered_dict(entries: list[tuple[bytes, int]], limit: int) -> None:
    """Adding unseen ids and forgetting beyond a limit keeps exactly what an insertion-ordered
    dict keeps, reports the newest time it forgot, and survives its stored form unchanged."""
    ring, model = IdRing(), {}
    for digest, ts in entries:
        if digest in model:
            assert ring.has(digest)
            continue
        assert not ring.has(digest)
        ring.add(digest, ts)
        model[digest] = ts
        newest_dropped = -1
        while len(model) > limit:
            newest_dropped = max(newest_dropped, model.pop(next(iter(model))))
        assert ring.forget(limit) == newest_dropped
        assert list(ring.items()) == list(model.items()) and ring.size() == len(model)
    again = IdRing.from_stored(bytes(ring))
    assert again == ring and list(again.items()) == list(model.items())
    assert list(again.digests()) == list(model) and again.times() == list(model.values())
