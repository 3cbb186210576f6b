"""Credentials in URLs stay on the node: whatever shows a URL shows it redacted.

A node runs tasks whose URL carries a password and an ``api_key`` (issue #9). The
task still calls the real URL, but the API (for a VIEWER too), ``scheduler
task-show``, the reload report and the log show ``user:***@`` and ``api_key=***``
instead, including where a URL is quoted inside a message or a run's output.
The value of a request header (``X-Api-Key``) is never shown at all.
"""

from __future__ import annotations

import base64
import json
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.admin_cli import ok, scheduler, show_fields, table_rows, write_config
from tests.support.daemon import Daemon, free_port
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PASSWORD = "s3cret-pw"
API_KEY = "K3Y-VALUE"
HEADER = "H34DER-VALUE"
ADMIN_TOKEN = "admin-token-for-operators-000001"
VIEWER_TOKEN = "viewer-token-for-dashboards-0001"


class Hook(BaseHTTPRequestHandler):
    """Refuses every call with a 503 whose body quotes the URL called, as many APIs do."""

    calls: list[tuple[str, str | None, str | None]] = []

    def do_GET(self) -> None:
        self.calls.append((self.path, self.headers.get("Authorization"), self.headers.get("X-Api-Key")))
        body = f"503 for http://{self.headers['Host']}{self.path}".encode()
        self.send_response(503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def hook():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def one_shot(name: str, run: str) -> str:
    return textwrap.dedent(
        f"""\
        apiVersion: scheduler/v1
        kind: Task
        name: {name}
        schedule: {{after: 0s}}
        retry: {{maxRetries: 0}}
        run: {run}
        """
    )


@pytest.fixture(scope="module")
def node(tmp_path_factory, hook) -> Daemon:
    root = tmp_path_factory.mktemp("redact")
    tasks = root / "tasks.d"
    tasks.mkdir()
    (tasks / "hooks.yaml").write_text(
        one_shot(
            "hook",
            f'{{http: {{url: "http://user:{PASSWORD}@127.0.0.1:{hook}/hook?api_key={API_KEY}&team=ops", '
            f'headers: {{X-Api-Key: {HEADER}}}}}}}',
        )
        + "---\n"
        # Port 99999 cannot be: aiohttp's InvalidURL error quotes the whole URL.
        + one_shot("bad-port", f'{{http: {{url: "http://user:{PASSWORD}@127.0.0.1:99999/hook?api_key={API_KEY}"}}}}')
        + "---\n"
        # Not an HTTP task: a command that prints a URL with credentials in its output.
        + one_shot("clone", f"{{shell: 'echo cloning https://deploy:{PASSWORD}@git.example.com/repo.git?token={API_KEY}; exit 1'}}")
    )
    (tasks / "rejected.yaml").write_text(
        one_shot("ftp-drop", f'{{http: {{url: "ftp://user:{PASSWORD}@files.example.com/drop?api_key={API_KEY}"}}}}')
    )
    config = write_config(
        root / "scheduler.yaml",
        f"""\
        api:
          auth:
            tokens:
              - {{name: grafana, token: {VIEWER_TOKEN}, roles: [VIEWER]}}
              - {{name: ops, token: {ADMIN_TOKEN}, roles: [ADMINISTRATOR]}}
        """,
    )
    daemon = Daemon(state_dir=root / "state", tasks_dir=tasks, config=config).start()
    try:
        for name in ("hook", "bad-port", "clone"):
            wait_until(lambda: viewer_get(daemon, f"/cxs/tasks/{name}")["status"] == "FAILED", what=f"{name} failed")
        yield daemon
    finally:
        daemon.kill()


def viewer_get(node: Daemon, path: str):
    status, body = node.request("GET", path, token=VIEWER_TOKEN)
    assert status == 200, (status, body)
    return body


def assert_no_secret(text: str) -> None:
    assert PASSWORD not in text and API_KEY not in text and HEADER not in text, text


def hook_url(port: int) -> str:
    return f"http://user:***@127.0.0.1:{port}/hook?api_key=***&team=***"


BAD_PORT_URL = "http://user:***@127.0.0.1:99999/hook?api_key=***"


def test_the_task_calls_the_real_url(node, hook):
    path, authorization, api_key = Hook.calls[0]
    assert path == f"/hook?api_key={API_KEY}&team=ops"
    assert authorization == "Basic " + base64.b64encode(f"user:{PASSWORD}".encode()).decode()
    assert api_key == HEADER


def test_the_task_shows_its_error_and_history_redacted(node, hook):
    task = viewer_get(node, "/cxs/tasks/hook")
    assert task["lastError"] == f"HTTP 503 from GET {hook_url(hook)}"
    assert task["history"][0]["error"] == task["lastError"]
    assert_no_secret(json.dumps(task))

    # aiohttp's own message quotes the URL: redacted inside the text too.
    task = viewer_get(node, "/cxs/tasks/bad-port")
    assert task["lastError"].startswith(f"GET {BAD_PORT_URL} failed: ") and task["lastError"].endswith(f"Error: {BAD_PORT_URL}")
    assert_no_secret(json.dumps(task))


def test_a_viewer_reads_run_records_redacted(node, hook):
    [run] = viewer_get(node, "/cxs/tasks/hook/runs")["list"]
    assert run["error"] == f"HTTP 503 from GET {hook_url(hook)}"
    assert run["output"] == f"503 for http://127.0.0.1:{hook}/hook?api_key=***&team=***"

    [run] = viewer_get(node, "/cxs/tasks/clone/runs")["list"]
    assert run["output"] == "cloning https://deploy:***@git.example.com/repo.git?token=***\n"

    for name in ("hook", "bad-port", "clone"):
        assert_no_secret(json.dumps(viewer_get(node, f"/cxs/tasks/{name}/runs")))
    assert_no_secret(json.dumps(viewer_get(node, "/cxs/tasks?limit=100")))


def test_task_show_shows_no_secret(node, hook):
    viewer = {"SCHEDULER_URL": node.url, "SCHEDULER_TOKEN": VIEWER_TOKEN}
    text = ok(scheduler("task-show", "hook", env=viewer))
    assert show_fields(text)["Last Error"] == f"HTTP 503 from GET {hook_url(hook)}"
    _, rows, after = table_rows(text.split("Recent runs (newest first):\n", 1)[1])
    [run] = rows.values()
    assert run[-1] == f"HTTP 503 from GET {hook_url(hook)}"
    assert after[-1] == f"  503 for http://127.0.0.1:{hook}/hook?api_key=***&team=***"
    assert_no_secret(text)

    text = ok(scheduler("task-show", "clone", env=viewer))
    assert text.rstrip().endswith("  cloning https://deploy:***@git.example.com/repo.git?token=***")
    assert_no_secret(text)

    for name in ("hook", "bad-port", "clone"):
        assert_no_secret(ok(scheduler("task-show", name, "-o", "json", env=viewer)))


def test_a_rejected_file_is_reported_without_the_secrets(node):
    config = viewer_get(node, "/cxs/config")
    [rejected] = [f for f in config["files"] if f["path"].endswith("rejected.yaml")]
    [error] = rejected["errors"]
    assert error["message"].startswith("run.http.url: expected an http:// or https:// URL, got string 'ftp://user:***@")
    assert_no_secret(json.dumps(config))

    reload = scheduler("reload", "--url", node.url, "--token", ADMIN_TOKEN)
    assert reload.returncode == 1 and "rejected.yaml:" in reload.stdout
    assert_no_secret(reload.stdout + reload.stderr)


def test_the_log_shows_no_secret(node, hook):
    log = node.log()
    assert f"failure: HTTP 503 from GET {hook_url(hook)}" in log
    assert f"failure: GET {BAD_PORT_URL} failed: " in log
    assert "ftp://user:***@files.example.com" in log  # the rejected file
    assert_no_secret(log)


# -- the commands' own messages -------------------------------------------------------------


def test_validate_quotes_a_bad_url_without_its_secrets(tmp_path):
    path = tmp_path / "drop.yaml"
    path.write_text(one_shot("drop", f'{{http: {{url: "ftp://user:{PASSWORD}@files.example.com/drop?api_key={API_KEY}"}}}}'))
    result = scheduler("validate", str(path))
    assert result.returncode == 1
    assert result.stdout == (
        f"{path}:6:19: run.http.url: expected an http:// or https:// URL, "
        "got string 'ftp://user:***@files.example.com/drop?api_key=***'\n"
    )


def test_a_store_url_that_cannot_be_used_is_shown_without_its_secrets(tmp_path):
    store = f"postgres://app:{PASSWORD}@db.example.com/tasks?sslpassword={API_KEY}"
    result = scheduler("run", "--store", store, "--state-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert result.stderr.startswith(
        "scheduler run: store postgres://app:***@db.example.com/tasks?sslpassword=***: "
        "unsupported store URL 'postgres://app:***@db.example.com/tasks?sslpassword=***'"
    )
    assert_no_secret(result.stderr)


@pytest.mark.parametrize("other_token", [None, "a-token-found-on-its-own"])
def test_an_admin_command_does_not_repeat_the_credentials_of_its_url(other_token):
    # Basic credentials in --url work (the API takes the token as password); errors must not show them.
    # A token found besides (SCHEDULER_TOKEN, a node's token file) gives way to them.
    port = free_port()
    env = {"SCHEDULER_TOKEN": other_token} if other_token else None
    result = scheduler("task-list", "--url", f"http://ops:{ADMIN_TOKEN}@127.0.0.1:{port}", env=env)
    assert result.returncode == 3, result.stderr
    assert result.stderr.startswith(f"scheduler: cannot connect to http://ops:***@127.0.0.1:{port} (connection refused)")
    assert ADMIN_TOKEN not in result.stderr
