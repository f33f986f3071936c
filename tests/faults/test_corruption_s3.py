"""Corruption matrix on an S3 store (moto): flip, truncate or delete a loose object, a pack, a pack
index, a manifest or a run record, then run each command that reads that kind of thing.

A template store is captured once per module; each case copies it under a fresh prefix (server
side), damages one key and reads it from a fresh machine (empty staging, blob cache and pack
index cache), so every read really comes from the bucket. The promise is the local one: a
one-line error where the damage matters, success where it does not, never a silently wrong
file, and the undamaged experiment still reads back byte for byte.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import random
import uuid

import pytest
import yaml

from studio_run.objects.digest import hash_bytes
from studio_run.objects.repository import Repository
from tests.conftest import FAKE_AWS_ENV
from tests.faults._support import DAMAGES, assert_no_traceback, assert_one_line_error, damage_bytes, read_tree
from tests.faults.test_corruption_local import READER
from tests.helpers import studio, write_script

pytestmark = pytest.mark.servers

WIDE = {"COLUMNS": "200", **FAKE_AWS_ENV}
_counter = itertools.count()


def _machine(root: str, name: str, url: str, endpoint: str) -> str:
    home = os.path.join(root, name)
    os.makedirs(os.path.join(home, ".studioml"))
    config = {"store": url, "store_options": {"endpoint": endpoint}, "upload_wait": "60s"}
    with open(os.path.join(home, ".studioml", "config.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    return home


def _client(endpoint: str):  # type: ignore[no-untyped-def]
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"])


def _keys(client, bucket: str, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


@pytest.fixture(scope="module")
def template(s3_server, tmp_path_factory):
    """``keep`` and ``victim`` captured to ``s3://BUCKET/tmpl``; victim's 40 small files travel in a pack."""
    root = str(tmp_path_factory.mktemp("s3-corrupt"))
    bucket = f"studio-faults-{uuid.uuid4().hex[:10]}"
    home = _machine(root, "writer", f"s3://{bucket}/tmpl", s3_server.endpoint)
    rnd = random.Random(3)
    trees = {
        "keep": {"k1.txt": b"keep one\n", "k2.bin": rnd.randbytes(3000)},
        "victim": {**{f"small/s{i:02}.txt": f"victim small {i}\n".encode() * (i + 1) for i in range(40)},
                   "loose.bin": rnd.randbytes(300 << 10)},
    }
    proj = os.path.join(home, "proj")
    os.makedirs(proj)
    script = write_script(proj, "s.py", "print('ok')\n")
    for exp, files in trees.items():
        for rel, data in files.items():
            path = os.path.join(home, exp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        done = studio("run", "-e", exp, f"--capture-once={os.path.join(home, exp)}:data", script,
                      home=home, cwd=proj, **FAKE_AWS_ENV)
        assert done.returncode == 0, done.stderr
    client = _client(s3_server.endpoint)
    keys = _keys(client, bucket, "tmpl/")
    record = next(k for k in keys if k.startswith("tmpl/experiments/victim/") and not k.endswith(".env.json"))
    body = json.loads(client.get_object(Bucket=bucket, Key=record)["Body"].read())
    small = hash_bytes(trees["victim"]["small/s00.txt"])
    index = next(k for k in keys if k.endswith(".index")
                 and any(row[0] == small for row in json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read())))
    targets = {
        "object": "tmpl/" + Repository.object_key(hash_bytes(trees["victim"]["loose.bin"])),
        "pack": index[: -len(".index")] + ".pack",
        "index": index,
        # the manifest restores read: the one with file times when the record has it
        "manifest": "tmpl/" + Repository.manifest_key(body["artifacts"]["data"].get("times")
                                                      or body["artifacts"]["data"]["digest"]),
        "record": record,
    }
    for key in targets.values():
        assert key in keys, (key, keys)
    return {"root": root, "bucket": bucket, "client": client, "keys": keys, "targets": targets, "trees": trees,
            "endpoint": s3_server.endpoint, "reader": write_script(root, "reader.py", READER)}


KINDS = ("object", "pack", "index", "manifest", "record")
# Every kind x damage through ``get`` (the read path of everything); the other commands where that
# kind changes what they do: a loose object and a pack through ``--reuse``, indexes, manifests and
# records through ``gc``, records through ``list``/``show``, one damage of each kind through ``check``.
CASES = (
    [("none", "-", command) for command in ("list", "get", "check")]
    + [(kind, how, "get") for kind in KINDS for how in DAMAGES if how != "truncate" or kind in ("pack", "index")]
    + [("object", "flip", "reuse"), ("pack", "flip", "reuse")]
    + [("index", "flip", "gc"), ("index", "delete", "gc"), ("manifest", "flip", "gc"), ("record", "flip", "gc")]
    + [("record", "flip", "list"), ("record", "flip", "show")]
    + [(kind, "flip", "check") for kind in KINDS]
)


def _expected(kind: str, how: str, command: str) -> str:
    if kind == "none" or (kind == "record" and how == "delete" and command in ("list", "gc", "check")):
        return "ok"
    if command in ("get", "reuse", "show"):
        return "error"
    if command == "check":
        return "damage"
    return "either"  # gc and list may refuse in one line or go on past what they cannot read


@pytest.mark.parametrize("kind,how,command", CASES)
def test_damaged_s3_store(template, tmp_path, kind, how, command):
    client, bucket = template["client"], template["bucket"]
    prefix = f"case{next(_counter)}-{uuid.uuid4().hex[:6]}"
    for key in template["keys"]:
        client.copy_object(Bucket=bucket, Key=f"{prefix}/{key[len('tmpl/'):]}",
                           CopySource={"Bucket": bucket, "Key": key})
    target = template["targets"].get(kind)
    if target:
        key = f"{prefix}/{target[len('tmpl/'):]}"
        if how == "delete":
            client.delete_object(Bucket=bucket, Key=key)
        else:
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            client.put_object(Bucket=bucket, Key=key, Body=damage_bytes(data, how))
    home = _machine(str(tmp_path), "reader", f"s3://{bucket}/{prefix}", template["endpoint"])
    dest = str(tmp_path / "dest")
    if command == "list":
        done = studio("list", home=home, **WIDE)
    elif command == "show":
        done = studio("show", "victim", home=home, **WIDE)
    elif command == "get":
        done = studio("get", "victim/data", dest, home=home, **WIDE)
    elif command == "reuse":
        done = studio("run", "-e", "reader", "--reuse=victim/data:v", template["reader"], dest, home=home, **WIDE)
    elif command == "gc":
        done = studio("gc", home=home, **WIDE)
    else:
        done = studio("check", home=home, **WIDE)
    cell = f"s3 {kind}/{how} x {command}: rc={done.returncode}\nstdout: {done.stdout}\nstderr: {done.stderr}"
    expected = _expected(kind, how, command)

    assert_no_traceback(done)
    if expected == "ok":
        assert done.returncode == 0, cell
    elif expected == "error":
        assert_one_line_error(done)
    elif expected == "damage":
        assert done.returncode != 0, cell
        assert "victim" in done.stdout + done.stderr, f"check does not name the run affected\n{cell}"
    elif done.returncode != 0:
        assert_one_line_error(done)

    original = {os.fsencode(k): v for k, v in template["trees"]["victim"].items()}
    if command == "get" and os.path.exists(dest):
        got = read_tree(dest)
        for rel, data in got.items():
            assert original.get(rel) == data, f"get wrote a wrong {rel!r}\n{cell}"
        if done.returncode == 0:
            assert got == original, cell
    if command == "reuse" and os.path.exists(dest):
        with open(dest, "rb") as f:
            assert pickle.load(f) == original, cell
    if command == "list":
        assert "keep" in done.stdout, cell
        if kind == "record" and how != "delete":
            assert "victim" in done.stdout + done.stderr, f"list does not name the damaged record\n{cell}"

    if command not in ("gc", "check"):
        return
    out = str(tmp_path / "keep-copy")  # the undamaged experiment still reads back after gc or check
    kept = studio("get", "keep/data", out, home=home, **WIDE)
    assert kept.returncode == 0, f"undamaged run lost: {kept.stderr}\n{cell}"
    assert read_tree(out) == {os.fsencode(k): v for k, v in template["trees"]["keep"].items()}, cell
