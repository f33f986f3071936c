"""Make the README's screenshots of ``studio ui``: the Runs page, a Run page and Compare.

    python docs/screenshots.py          # writes docs/ui-runs.png, docs/ui-run.png, docs/ui-compare.png

Everything is real: a throwaway home, a small training script run by ``studio run`` (a sweep
over the learning rate, and a fine-tuning run that reuses the best model), then ``studio ui`` on
a free port, photographed by Debian's Chromium through Playwright (never a downloaded browser).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import time

from playwright.sync_api import sync_playwright

DOCS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(DOCS)
TRAIN = """\
import argparse, json, math, os, random
parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()
random.seed(int(args.lr * 1000))
os.makedirs("checkpoints", exist_ok=True)
loss = 2.0
for epoch in range(1, args.epochs + 1):
    loss *= 1 - min(0.9, args.lr) * random.uniform(0.4, 0.9)
    print(f"epoch {epoch}/{args.epochs}  loss={loss:.4f}  lr={args.lr}", flush=True)
    with open(f"checkpoints/epoch-{epoch}.bin", "wb") as f:
        f.write(os.urandom(4096 * epoch))
with open("checkpoints/metrics.json", "w") as f:
    json.dump({"loss": loss, "lr": args.lr}, f)
print("done", flush=True)
"""


def _studio(home: str, work: str, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "STUDIO"))}
    env.update(HOME=home, STUDIOML_HOME=os.path.join(home, ".studioml"), PYTHONPATH=REPO)
    subprocess.run([sys.executable, "-m", "studio_run", *args], cwd=work, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _serve(home: str, work: str) -> tuple[subprocess.Popen, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "STUDIO"))}
    env.update(HOME=home, STUDIOML_HOME=os.path.join(home, ".studioml"), PYTHONPATH=REPO)
    proc = subprocess.Popen([sys.executable, "-m", "studio_run", "ui", "--port", "0"], cwd=work, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + 60
    while not line.endswith(b"\n") and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 0.5)[0]:
            line += os.read(proc.stdout.fileno(), 4096)
    url = line.decode().split(" at ", 1)[1].split()[0].rstrip("/")
    return proc, url


def main() -> None:
    """Fill a store, serve it, take the three pictures."""
    with tempfile.TemporaryDirectory() as tmp:
        home, work = os.path.join(tmp, "home"), os.path.join(tmp, "work")
        os.makedirs(home)
        os.makedirs(work)
        with open(os.path.join(work, "train.py"), "w") as f:
            f.write(TRAIN)
        _studio(home, work, "run", "-e", "mnist-sweep", "-hp", "lr=0.3,0.1,0.03", "-c", "checkpoints:model",
                "train.py", "--epochs", "4")
        _studio(home, work, "run", "-e", "mnist-finetune", "-r", "mnist-sweep/model@2:base", "-c",
                "checkpoints:model", "train.py", "--lr", "0.01", "--epochs", "6")
        _studio(home, work, "run", "-e", "mnist-finetune", "-r", "mnist-sweep/model@2:base", "-c",
                "checkpoints:model", "train.py", "--lr", "0.02", "--epochs", "5")
        proc, url = _serve(home, work)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=["--headless", "--no-sandbox", "--disable-gpu"])
                page = browser.new_page(viewport={"width": 1280, "height": 760})
                page.goto(url + "/")
                page.screenshot(path=os.path.join(DOCS, "ui-runs.png"))
                page.locator('tr.run[data-experiment="mnist-finetune"][data-version="2"] a.open').click()
                page.wait_for_selector("#log pre.log:has-text('done')")
                page.locator("#artifact-model button.files").click()
                page.wait_for_selector("#tree-model a.file")
                page.screenshot(path=os.path.join(DOCS, "ui-run.png"), full_page=True)
                page.goto(url + "/?experiment=finetune")
                for box in page.locator("#runs-table input[name=run]").all():
                    box.check()
                page.locator("button.compare").click()
                page.wait_for_url("**/compare?**")
                page.screenshot(path=os.path.join(DOCS, "ui-compare.png"), full_page=True)
                browser.close()
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print("wrote docs/ui-runs.png, docs/ui-run.png, docs/ui-compare.png")


if __name__ == "__main__":
    main()
