"""Listing is complete, in key order, and crosses S3's 1,000-keys-per-page boundary."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from depth_store import ObjectStore

N_OBJECTS = 1_013  # more than one S3 page (1,000)


def test_listing_past_one_thousand_objects(any_store: ObjectStore) -> None:
    keys = [f"raw/part={i % 3}/obj-{i:05d}.jsonl.gz" for i in range(N_OBJECTS)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        infos = list(pool.map(lambda k: any_store.put_bytes(k, k.encode()), keys))
    assert len(infos) == N_OBJECTS
    any_store.put_bytes("rawx/not-under-raw-slash", b"x")

    listed = list(any_store.list("raw/"))
    assert [o.key for o in listed] == sorted(keys)
    assert len({o.key for o in listed}) == N_OBJECTS
    assert all(o.size == len(o.key) for o in listed)

    one_part = [o.key for o in any_store.list("raw/part=1/")]
    assert one_part == sorted(k for k in keys if k.startswith("raw/part=1/"))
    assert [o.key for o in any_store.list("raw/part=1/obj-0000")] == [
        "raw/part=1/obj-00001.jsonl.gz",
        "raw/part=1/obj-00004.jsonl.gz",
        "raw/part=1/obj-00007.jsonl.gz",
    ]
    assert len(list(any_store.list())) == N_OBJECTS + 1


def test_list_is_in_key_order_across_folders(any_store: ObjectStore) -> None:
    # '-' (0x2d) sorts before '/' (0x2f): a depth-first walk would get this wrong.
    for key in ["a/b", "a-c", "a/a", "a0", "A"]:
        any_store.put_bytes(key, b"")
    assert [o.key for o in any_store.list()] == ["A", "a-c", "a/a", "a/b", "a0"]
    assert [o.key for o in any_store.list("a")] == ["a-c", "a/a", "a/b", "a0"]
