"""``studio gc`` on a remote store: packs go only when none of their objects is live."""

from __future__ import annotations

from studio_run.objects.packs import index_key, pack_key
from studio_run.store.gc import collect_garbage
from studio_run.store.records import RecordStore
from tests.store.test_sync import _record, _tree, opened, spy  # noqa: F401  (fixtures)

KEEP = {f"k{i:03}.txt": f"keep {i}\n".encode() for i in range(40)}
DROP = {f"d{i:03}.txt": f"drop {i}\n".encode() for i in range(40)}


def test_a_pack_of_dead_objects_is_swept_and_a_live_one_kept(tmp_path, spy, opened):  # noqa: F811
    store = opened(tmp_path / "a", spy)
    kept = _record(store, "keep", {"w": _tree(tmp_path / "k", KEEP)})
    dropped = _record(store, "drop", {"w": _tree(tmp_path / "d", DROP)})
    store.publish(kept)
    store.publish(dropped)
    assert store.syncer().finish(10)
    packs = store.repo.packs.packs()
    assert len(packs) == 2
    RecordStore(spy).delete_experiment("drop")

    result = collect_garbage(store, grace=0)
    assert result.objects_removed == len(DROP)
    (live,) = [name for name, members in packs.items() if set(members) - set(store.repo.packs.digests()) == set()]
    assert spy.exists(index_key(live)) and spy.exists(pack_key(live))
    assert len([k for k in spy.list("packs/") if k.endswith(".index")]) == 1

    reader = opened(tmp_path / "b", spy)
    manifest = reader.repo.get_manifest(kept.artifacts["w"].digest)
    assert {e.path: reader.repo.read_object(e.digest) for e in manifest.entries} == KEEP
