"""A run request travels as JSON between machines: round trips, and capture paths kept as typed."""

from __future__ import annotations

import json
import os

import pytest

from studio_run.cli.params import CAPTURE
from studio_run.refs import ArtifactRef, CaptureSpec, ReuseSpec
from studio_run.runner.request import RunRequest


@pytest.mark.parametrize(
    "request_",
    [
        RunRequest(script="train.py", cwd="/work"),
        RunRequest(script=None, module="pkg.train", args=("--lr", "0.1", "--api-key", "s3cr3t"), cwd="/w"),
        RunRequest(
            script="t.py",
            experiment="linreg",
            captures=(CaptureSpec("/home/u/w", "weights", given="~/w"),),
            captures_once=(CaptureSpec("/work/data", "data", given="data"),),
            reuses=(ReuseSpec(ArtifactRef("linreg", "weights", "2"), "w"),
                    ReuseSpec(ArtifactRef("e", "t"), "t")),
            cwd="/work",
        ),
        RunRequest(script="ü n i.py", args=("", "a b", "--x=ü"), cwd="/tmp/ä"),
    ],
)
def test_request_round_trips_through_json(request_):
    text = json.dumps(request_.to_dict())
    back = RunRequest.from_dict(json.loads(text))
    assert back == request_
    assert [c.given for c in back.captures + back.captures_once] == [
        c.given for c in request_.captures + request_.captures_once
    ]


def test_capture_paths_keep_the_text_as_typed_next_to_the_resolved_path():
    spec = CAPTURE.convert("~/w:weights", None, None)
    assert spec.given == "~/w" and spec.path == os.path.expanduser("~/w")
    rel = CAPTURE.convert("rel/dir:data", None, None)
    assert rel.given == "rel/dir" and rel.path == os.path.abspath("rel/dir")
    data = RunRequest(script="t.py", captures=(spec,), captures_once=(rel,), cwd=os.getcwd()).to_dict()
    assert data["captures"] == [{"given": "~/w", "path": os.path.expanduser("~/w"), "tag": "weights"}]


def test_another_machine_resolves_the_given_paths_its_own_way(monkeypatch):
    sent = RunRequest(script="t.py", captures=(CaptureSpec.parse("~/w", "w", cwd="/submit"),),
                      captures_once=(CaptureSpec.parse("data", "d", cwd="/submit"),), cwd="/submit")
    received = RunRequest.from_dict(json.loads(json.dumps(sent.to_dict())))
    monkeypatch.setenv("HOME", "/home/worker")
    here = received.resolved("/scratch/job")
    assert here.captures[0].path == "/home/worker/w" and here.captures[0].given == "~/w"
    assert here.captures_once[0].path == "/scratch/job/data"
    assert here.cwd == "/scratch/job"


@pytest.mark.parametrize("data", [{"format": 99, "script": "t.py", "cwd": "/"}, {"script": "t.py"},
                                  {"script": "t.py", "cwd": "/", "reuses": [{"experiment": "e"}]}])
def test_a_request_that_cannot_be_read_is_a_value_error(data):
    with pytest.raises(ValueError):
        RunRequest.from_dict(data)
