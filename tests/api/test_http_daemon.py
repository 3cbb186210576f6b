"""The API of a real ``scheduler run`` process, over HTTP on 127.0.0.1: config file tokens, roles, CORS, metrics."""

from __future__ import annotations

import hashlib
import json
import textwrap
import urllib.error
import urllib.request

import pytest

from tests.support.daemon import Daemon
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ADMIN_TOKEN = "http-admin-token"
VIEWER_TOKEN = "http-viewer-token"
ORIGIN = "https://console.example.com"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    tasks = root / "tasks.d"
    tasks.mkdir()
    (tasks / "report.yaml").write_text(textwrap.dedent("""\
        apiVersion: scheduler/v1
        kind: Task
        name: nightly-report
        type: report
        schedule: {cron: "0 3 * * *"}
        run: {shell: "true"}
        parameters: {format: pdf}
        """))
    (root / "admin.secret").write_text(ADMIN_TOKEN + "\n")
    config = root / "scheduler.yaml"
    config.write_text(textwrap.dedent(f"""\
        api:
          auth:
            tokens:
              - {{name: ops, tokenFile: admin.secret, roles: [ADMINISTRATOR]}}
              - {{name: grafana, sha256: {hashlib.sha256(VIEWER_TOKEN.encode()).hexdigest()}, roles: [VIEWER]}}
          cors: {{allowOrigins: ["{ORIGIN}"]}}
          metrics: {{auth: true}}
        """))
    node = Daemon(state_dir=root / "state", tasks_dir=tasks, config=config).start()
    yield node
    node.kill()


def call(node: Daemon, method: str, path: str, headers: dict[str, str] | None = None):
    request = urllib.request.Request(node.url + path, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_health_is_open_and_tasks_need_a_token(daemon):
    assert call(daemon, "GET", "/livez")[0] == 200
    assert call(daemon, "GET", "/readyz")[0] == 200

    status, headers, body = call(daemon, "GET", "/cxs/tasks")

    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="scheduler"'
    assert json.loads(body)["code"] == "401"


def test_a_viewer_reads_and_may_not_act(daemon):
    status, _, body = call(daemon, "GET", "/cxs/tasks?type=report", bearer(VIEWER_TOKEN))
    listing = json.loads(body)
    refused = call(daemon, "DELETE", "/cxs/tasks/nightly-report", bearer(VIEWER_TOKEN))

    assert status == 200
    assert listing["totalSize"] == 1
    assert {k: listing["list"][0][k] for k in ("itemId", "taskType", "status", "persistent", "parameters")} == {
        "itemId": "nightly-report", "taskType": "report", "status": "SCHEDULED", "persistent": True,
        "parameters": {"format": "pdf"},
    }
    assert refused[0] == 403


def test_an_administrator_runs_a_task_now_and_it_runs(daemon):
    status, _, body = call(daemon, "POST", "/cxs/tasks/nightly-report/run", bearer(ADMIN_TOKEN))

    assert status == 200 and json.loads(body)["itemId"] == "nightly-report"

    def ran_once() -> dict | None:
        task = json.loads(call(daemon, "GET", "/cxs/tasks/nightly-report", bearer(ADMIN_TOKEN))[2])
        return task if task["successCount"] == 1 else None

    task = wait_until(ran_once, what="the run requested through the API")
    assert task["source"]["path"].endswith("tasks.d/report.yaml")
    assert task["history"][0]["outcome"] == "success"


def test_metrics_need_a_viewer_and_count_the_node_work(daemon):
    anonymous = call(daemon, "GET", "/metrics")
    status, headers, body = call(daemon, "GET", "/metrics", bearer(VIEWER_TOKEN))

    assert anonymous[0] == 401
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    assert 'scheduler_task_next_run_timestamp_seconds{task="nightly-report"}' in body.decode()
    assert "scheduler_config_last_reload_successful 1.0" in body.decode()


def test_cors_preflight_and_unknown_ids(daemon):
    preflight = call(daemon, "OPTIONS", "/cxs/tasks/nightly-report",
                     {"Origin": ORIGIN, "Access-Control-Request-Method": "DELETE"})
    missing = call(daemon, "GET", "/cxs/tasks/123e4567", bearer(VIEWER_TOKEN))

    assert preflight[0] == 204 and preflight[1]["Access-Control-Allow-Origin"] == ORIGIN
    assert missing[0] == 404
    assert json.loads(missing[2]) == {"error": "Task not found", "code": "404", "message": "No task exists with ID: 123e4567"}
