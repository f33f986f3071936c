"""What the pages say, checked fast with Starlette's TestClient over real runs: hyper-parameter
filter and sorting on the Runs page, lineage both ways on the Run page, file changes on Compare,
the whole log of a finished run, and the tree's folders."""

from __future__ import annotations

import os
import re
from typing import Iterator

import pytest
from starlette.testclient import TestClient

from tests.helpers import studio
from tests.web.conftest import Home, app_client

ROW = re.compile(r'<tr class="run" data-experiment="([^"]+)" data-version="(\d+)">')


@pytest.fixture(scope="module")
def home(alpha_home: Home) -> Home:
    """alpha (twice), a sweep over lr (two runs), and a run that reused alpha's model."""
    proc = studio("run", "-e", "sweep", "-hp", "lr=0.5,0.05", "-c", "out:model", "train.py",
                  home=alpha_home.home, cwd=alpha_home.work)
    assert proc.returncode == 0, proc.stderr
    with open(os.path.join(alpha_home.work, "train.py"), "a") as f:
        f.write("open('out/extra.txt', 'w').write('new file')\n")
    alpha_home.run("child", "--lr", "0.1", options=("-r", "alpha/model:m"))
    return alpha_home


@pytest.fixture(scope="module")
def client(home: Home) -> Iterator[TestClient]:
    with app_client(home) as c:
        yield c


def _rows(html: str) -> list[tuple[str, int]]:
    return [(e, int(v)) for e, v in ROW.findall(html)]


def test_runs_page_filters_by_a_hyper_parameter_value(client: TestClient) -> None:
    page = client.get("/", params={"hp": "lr=0.05"})
    assert _rows(page.text) == [("sweep", 2)]
    assert client.get("/", params={"hp": "lr=0.050"}).text.count('class="run"') == 1  # compared as numbers
    assert _rows(client.get("/", params={"hp": "lr=7"}).text) == []


def test_runs_page_sorts_by_experiment_and_fragment_for_htmx(client: TestClient) -> None:
    page = client.get("/", params={"sort": "experiment", "order": "asc"})
    names = [e for e, _v in _rows(page.text)]
    assert names == sorted(names) and set(names) == {"alpha", "sweep", "child"}
    fragment = client.get("/", params={"experiment": "alp"}, headers={"HX-Request": "true", "HX-Target": "runs"})
    assert "<html" not in fragment.text and _rows(fragment.text) == [("alpha", 2), ("alpha", 1)]


def test_runs_page_with_a_nonsense_query_falls_back_to_defaults(client: TestClient) -> None:
    page = client.get("/", params={"page": "x", "sort": "nope", "order": "sideways"})
    assert page.status_code == 200 and len(_rows(page.text)) == 5
    assert "No runs" in client.get("/", params={"page": "99"}).text


def test_run_page_shows_lineage_both_ways(client: TestClient, home: Home) -> None:
    child = client.get(f"/runs/child/{home.runs['child'][0]}").text
    assert f'href="/runs/alpha/{home.runs["alpha"][1]}">alpha/model@2</a>' in child
    parent = client.get(f"/runs/alpha/{home.runs['alpha'][1]}").text
    assert f'href="/runs/child/{home.runs["child"][0]}">child version 1</a>' in parent
    assert "No run reused this one" in client.get(f"/runs/alpha/{home.runs['alpha'][0]}").text


def test_run_page_lists_every_version_and_the_finished_log(client: TestClient, home: Home) -> None:
    page = client.get(f"/runs/alpha/{home.runs['alpha'][0]}").text
    for run_id in home.runs["alpha"]:
        assert f'href="/runs/alpha/{run_id}"' in page
    log = client.get(f"/runs/alpha/{home.runs['alpha'][0]}/log").text
    assert "trained with lr 0.1" in log and "hx-trigger" not in log  # ended: no more polling


def test_tree_lists_a_folder_and_refuses_unknown_ones(client: TestClient, home: Home) -> None:
    run = f"/runs/alpha/{home.runs['alpha'][0]}"
    top = client.get(f"{run}/tree/model").text
    assert "sub/" in top and "model.txt" in top
    assert "weights.bin" in client.get(f"{run}/tree/model", params={"path": "sub"}).text
    assert client.get(f"{run}/tree/model", params={"path": "../sub"}).status_code == 404
    assert client.get(f"{run}/tree/model", params={"path": "nothere"}).status_code == 404
    assert client.get(f"{run}/tree/nosuchtag").status_code == 404


def test_compare_marks_changed_arguments_and_file_changes(client: TestClient, home: Home) -> None:
    page = client.get("/compare", params={"run": [f"alpha/{home.runs['alpha'][0]}", f"child/{home.runs['child'][0]}"]})
    assert page.status_code == 200
    html = page.text
    assert "+ extra.txt" in html  # child's model holds a file alpha v1's does not
    assert "~ model.txt" not in html  # same --lr, same bytes
    compared = client.get("/compare", params={"run": [f"alpha/{home.runs['alpha'][0]}",
                                                      f"alpha/{home.runs['alpha'][1]}"]}).text
    assert "~ model.txt" in compared and "+ extra.txt" not in compared
    assert re.search(r'<tr class="differs"><th>argument \d+</th><td><code>0.1</code></td><td><code>0.01</code>', compared)


def test_compare_wants_two_to_eight_runs(client: TestClient, home: Home) -> None:
    one = client.get("/compare", params={"run": [f"alpha/{home.runs['alpha'][0]}"]})
    assert one.status_code == 400 and "pick 2 to 8 runs" in one.text
    assert client.get("/compare", params={"run": ["alpha/nope", "alpha/nope2"]}).status_code == 404
