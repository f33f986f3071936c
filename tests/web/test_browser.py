"""``studio ui`` driven as a user would, in Debian's Chromium through Playwright.

One store filled by real ``studio run``s (experiment ``alpha`` twice with different ``--lr``, and
``live``, a run still printing when the tests start), plus 53 copies of alpha's first record
under experiment ``bulk`` written through the record store, so that the Runs page has two pages
(50 a page) without 53 more runs. One ``studio ui`` subprocess and one browser for the module.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import tarfile
from dataclasses import replace
from typing import Iterator

import playwright.sync_api as playwright_api  # noqa: E402 - the [test] extra; never skipped
import pytest

from studio_run.config import load_config
from studio_run.store.open import open_store
from tests.helpers import wait_for, write_script
from tests.web.conftest import Home, Server, chromium_path, expected_files, make_home, start_ui

if chromium_path() is None:  # .ci/test installs it: a missing browser fails loudly, never skips
    raise RuntimeError("tests/web need Debian's Chromium at /usr/bin/chromium: apt-get install chromium")

LIVE = """\
import itertools, time
for i in itertools.count():
    print("tick", i, flush=True)
    time.sleep(0.3)
    if i > 600:
        break
"""
BULK = 53
REBIND = "rebind.example"  # resolved to 127.0.0.1 by the browser only: a DNS rebinding attack's name


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    home = make_home(str(tmp_path_factory.mktemp("browser")))
    config = load_config(None, env=home.env())
    store = open_store(config)
    first = store.records.read("alpha", home.runs["alpha"][0])
    for i in range(BULK):
        store.records.write(replace(first, experiment="bulk", run_id=f"20200101T0000{i:02d}Z-{i:06x}",
                                    started_at=1577836800.0 + i, ended_at=1577836801.0 + i * 2))
    store.close()
    yield home


@pytest.fixture(scope="module")
def live(home: Home) -> Iterator[subprocess.Popen]:
    """A run printing ``tick N`` every 0.3 s, running while the module's tests look at it."""
    write_script(home.work, "live.py", LIVE)
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "run", "-e", "live", "live.py"], cwd=home.work,
                            env=home.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = load_config(None, env=home.env())
    store = open_store(config)
    wait_for(lambda: store.records.run_ids("live") if "live" in store.records.experiments() else [],
             "the live run's record")
    home.runs["live"] = store.records.run_ids("live")
    store.close()
    yield proc
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def server(home: Home, live: subprocess.Popen) -> Iterator[Server]:
    ui = start_ui(home)
    yield ui
    ui.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator["playwright_api.Browser"]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium_path(), headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  f"--host-resolver-rules=MAP {REBIND} 127.0.0.1"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: "playwright_api.Browser") -> Iterator["playwright_api.Page"]:
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    yield page
    context.close()


def _rows(page: "playwright_api.Page") -> list[tuple[str, str]]:
    """The (experiment, version) of each row shown, read in one step (htmx may swap the table meanwhile)."""
    rows = page.evaluate("""() => Array.from(document.querySelectorAll('#runs-table tr.run'))
        .map(r => [r.dataset.experiment, r.dataset.version])""")
    return [(e, v) for e, v in rows]


def test_runs_table_shows_the_runs_newest_first(page, server: Server, home: Home) -> None:
    page.goto(server.base + "/")
    total = 2 + BULK + 1
    assert page.locator("#total").inner_text() == str(total)
    rows = _rows(page)
    assert len(rows) == 50
    assert rows[:3] == [("live", "1"), ("alpha", "2"), ("alpha", "1")]
    assert page.locator("tr.run .status").first.inner_text() == "running"


def test_paging_goes_to_the_second_page_without_reloading(page, server: Server) -> None:
    page.goto(server.base + "/")
    page.evaluate("window.__kept = 'same page'")
    page.locator("a[rel=next]").click()
    page.wait_for_url(re.compile(r"page=2"))
    wait_for(lambda: len(_rows(page)) == 2 + BULK + 1 - 50, "the second page's rows")
    assert all(experiment == "bulk" for experiment, _v in _rows(page))
    assert "page 2 of 2" in page.locator(".count").inner_text()
    assert page.evaluate("window.__kept") == "same page"


def test_filtering_by_experiment_name_narrows_the_table(page, server: Server) -> None:
    page.goto(server.base + "/")
    page.locator("input[name=experiment]").fill("alph")
    wait_for(lambda: _rows(page) == [("alpha", "2"), ("alpha", "1")], "the filtered rows")
    assert page.locator("#total").inner_text() == "2"
    assert "experiment=alph" in page.url


def test_a_click_opens_the_run_page(page, server: Server, home: Home) -> None:
    page.goto(server.base + "/?experiment=alpha")
    page.locator('tr.run[data-version="1"] a.open').click()
    page.wait_for_url(f"**/runs/alpha/{home.runs['alpha'][0]}")
    assert "version 1" in page.locator("h1").inner_text()
    assert "--lr 0.1" in page.locator("#command").inner_text()
    assert page.locator("#status").inner_text() == "finished"
    page.locator("#artifact-model button.files").click()
    page.locator("#tree-model button.folder").click()
    # The folder opens through htmx: wait for it (is_visible() would read the page before the swap).
    playwright_api.expect(page.locator("#tree-model a.file", has_text="weights.bin")).to_be_visible(timeout=30_000)


def test_the_tar_gz_download_holds_the_captured_bytes_and_times(page, server: Server, home: Home, tmp_path) -> None:
    page.goto(f"{server.base}/runs/alpha/{home.runs['alpha'][0]}")
    with page.expect_download() as info:
        page.locator('#artifact-model a[href$="/artifact/model.tar.gz"]').click()
    download = info.value
    assert download.suggested_filename == "alpha-v1-model.tar.gz"
    saved = tmp_path / "model.tar.gz"
    download.save_as(saved)
    with tarfile.open(saved, "r:gz") as tar:
        files = {m.name: (tar.extractfile(m).read(), int(m.mtime)) for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    assert files == expected_files("0.1")


def _ticks(page) -> int:
    found = re.findall(r"tick (\d+)", page.locator("#log pre.log").inner_text())
    return int(found[-1]) if found else -1


def test_the_log_of_a_running_run_updates_in_the_page(page, server: Server, home: Home) -> None:
    page.goto(f"{server.base}/runs/live/{home.runs['live'][0]}")
    page.evaluate("window.__kept = 'same page'")
    first = wait_for(lambda: _ticks(page) + 1, "the first lines of the live log") - 1
    wait_for(lambda: _ticks(page) >= first + 3, "new lines in the live log")
    assert page.evaluate("window.__kept") == "same page"  # updated in place, never reloaded


def test_the_stop_button_stops_the_run(page, server: Server, home: Home, live: subprocess.Popen) -> None:
    page.goto(f"{server.base}/runs/live/{home.runs['live'][0]}")
    assert page.locator("#status").inner_text() == "running"
    dialogs: list[str] = []

    def accept(dialog) -> None:  # type: ignore[no-untyped-def]
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.locator("#stop").click()
    wait_for(lambda: page.locator("#status").inner_text() == "stopped", "the page to show the run stopped")
    assert dialogs and dialogs[0].startswith("Stop live version 1")
    live.wait(timeout=60)
    config = load_config(None, env=home.env())
    store = open_store(config)
    assert store.records.read("live", home.runs["live"][0]).status == "stopped"


def test_compare_shows_the_changed_argument(page, server: Server) -> None:
    page.goto(server.base + "/?experiment=alpha")
    for box in page.locator("#runs-table input[name=run]").all():
        box.check()
    page.locator("button.compare").click()
    page.wait_for_url("**/compare?**")
    differing = page.locator("#compare-records tr.differs", has_text="argument")
    texts = [differing.nth(i).inner_text() for i in range(differing.count())]
    assert any("0.01" in t and "0.1" in t.replace("0.01", "") for t in texts), texts


def test_a_traversal_url_is_refused(page, server: Server, home: Home) -> None:
    run = f"/runs/alpha/{home.runs['alpha'][0]}"
    response = page.goto(f"{server.base}{run}/file/model/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd")
    assert response is not None and response.status == 404
    assert "root:" not in page.content()
    # The browser folds "..", so the literal form goes over a plain connection.
    for path in ("../../../etc/passwd", "sub/../../../../etc/passwd", "/etc/passwd", "model.txt%00"):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", f"{run}/file/model/{path}")
        answer = connection.getresponse()
        assert answer.status == 404, path
        assert b"root:" not in answer.read()
        connection.close()


def test_a_foreign_host_header_is_refused(page, server: Server) -> None:
    response = page.goto(f"http://{REBIND}:{server.port}/")
    assert response is not None and response.status == 400
    assert "unknown Host header" in page.content()
    assert page.locator("#runs-table").count() == 0


def test_a_non_loopback_bind_refuses_a_browser_without_the_token(page, home: Home) -> None:
    wide = start_ui(home, "--host", "0.0.0.0")
    try:
        assert "?token=" in wide.url
        response = page.goto(wide.base + "/")
        assert response is not None and response.status == 403
        assert page.locator("#runs-table").count() == 0
        token = wide.url.split("?token=", 1)[1]
        response = page.goto(f"{wide.base}/?token={token}")
        assert response is not None and response.status == 200
        assert page.url == wide.base + "/"  # the token left the address bar
        assert page.locator("#total").inner_text() != ""
        cookies = {c["name"]: c for c in page.context.cookies()}
        cookie = cookies[f"studio_ui_token_{wide.port}"]  # one per port: two servers on a host keep theirs
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert page.goto(wide.base + "/?experiment=alpha").status == 200  # type: ignore[union-attr]
    finally:
        wide.stop()
