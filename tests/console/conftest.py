"""Headless Chromium (Debian's ``chromium``) driven by Playwright against a real ``scheduler run`` node.

Nothing downloads a browser: Playwright launches the executable at ``SCHEDULER_TEST_CHROMIUM``
(default ``/usr/bin/chromium``). Without it the tests skip, unless ``CI`` is set: CI installs it
(``.ci/run``), and a browser test that skips there proves nothing, so it fails instead.
Screenshots of the pages go to ``SCHEDULER_TEST_ARTIFACTS`` (default: a temporary folder, named
at the end of the run).
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

CHROMIUM_ENV = "SCHEDULER_TEST_CHROMIUM"
ARTIFACTS_ENV = "SCHEDULER_TEST_ARTIFACTS"
ADMIN_TOKEN = "console-admin-token-0000000000001"
VIEWER_TOKEN = "console-viewer-token-000000000001"
# As the probe of this machine runs it: no sandbox (root), and nothing reaching out to the network.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
XSS_DESCRIPTION = "<script>window.__pwned='description'</script><img src=x onerror=\"window.__pwned='img';alert(1)\">"
XSS_OUTPUT = ["<script>window.__pwned='output'</script>", "<img src=x onerror=\"window.__pwned='output-img';alert(2)\">"]

_artifacts: list[Path] = []


def chromium_path() -> str:
    path = os.environ.get(CHROMIUM_ENV, "/usr/bin/chromium")
    if not Path(path).exists():
        message = f"no Chromium at {path} (apt-get install chromium chromium-driver, or set {CHROMIUM_ENV})"
        if os.environ.get("CI"):
            pytest.fail(f"{message}: CI must run the browser tests")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get(ARTIFACTS_ENV) or tempfile.mkdtemp(prefix="scheduler-console-"))
    folder.mkdir(parents=True, exist_ok=True)
    _artifacts.append(folder)
    return folder


def pytest_terminal_summary(terminalreporter):
    for folder in _artifacts:
        terminalreporter.write_line(f"console screenshots: {folder}")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    executable = chromium_path()
    from playwright.sync_api import sync_playwright  # a test dependency: an import error fails

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


@pytest.fixture(scope="module")
def node_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def gate(node_root) -> Path:
    """The task ``gated`` runs until this file exists."""
    return node_root / "gate"


@pytest.fixture(scope="module")
def node(node_root, gate) -> Iterator[Daemon]:
    """A node with two tokens and the tasks the browser tests look at."""
    root = node_root
    tasks = root / "tasks.d"
    tasks.mkdir()
    for name, labels in (("alpha-1", "{team: red}"), ("alpha-2", "{team: blue}"), ("beta-1", "{team: blue}")):
        _write(tasks / f"{name}.yaml", f"""\
            apiVersion: scheduler/v1
            kind: Task
            name: {name}
            labels: {labels}
            schedule: {{every: 1h}}
            run: {{shell: "echo {name} ran"}}
            """)
    _write(tasks / "long-runner.yaml", """\
        apiVersion: scheduler/v1
        kind: Task
        name: long-runner
        description: Sleeps until it is cancelled
        schedule: {every: 1h}
        run: {shell: "exec sleep 300"}
        """)
    _write(tasks / "gated.yaml", f"""\
        apiVersion: scheduler/v1
        kind: Task
        name: gated
        schedule: {{after: 0s}}
        run:
          shell: |
            while [ ! -e {gate} ]; do sleep 0.05; done
            echo gate-opened
        """)
    description = XSS_DESCRIPTION.replace("'", "''")
    (tasks / "xss.yaml").write_text(
        "apiVersion: scheduler/v1\nkind: Task\nname: xss\n"
        f"description: '{description}'\n"
        "parameters: {html: '<b onmouseover=alert(3)>bold</b>'}\n"
        "schedule: {every: 1h}\n"
        "run:\n  shell: |\n    cat <<'PAYLOAD'\n" + "\n".join("    " + line for line in XSS_OUTPUT) + "\n    PAYLOAD\n"
    )
    config = root / "scheduler.yaml"
    _write(config, f"""\
        api:
          auth:
            tokens:
              - {{name: ops, token: {ADMIN_TOKEN}, roles: [ADMINISTRATOR]}}
              - {{name: grafana, token: {VIEWER_TOKEN}, roles: [VIEWER]}}
        """)
    daemon = Daemon(state_dir=root / "state", tasks_dir=tasks, config=config)
    daemon.start()
    try:
        wait_until(lambda: (daemon.request("GET", "/cxs/tasks/xss", token=ADMIN_TOKEN)[1] or {}).get("successCount"),
                   timeout=30, what="the xss task's first run")
        yield daemon
    finally:
        daemon.kill()


class Console:
    """One browser page on the node's console, logged in or not."""

    def __init__(self, context, node: Daemon, artifacts: Path) -> None:
        self.context = context
        self.node = node
        self.artifacts = artifacts
        self.page = context.new_page()
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.node.url}/{fragment}")

    def login(self, token: str) -> None:
        self.open()
        self.page.fill("#token", token)
        self.page.click("#login-form button")
        # The token is kept only once the node has answered /cxs/whoami: a navigation made
        # before that answer would find no token and show the login form again.
        self.page.wait_for_selector("#nav:visible, #login-error:visible", state="attached")

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=True)


@pytest.fixture
def console(browser, node, artifacts) -> Iterator:
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    try:
        yield lambda: Console(context, node, artifacts)
    finally:
        context.close()
