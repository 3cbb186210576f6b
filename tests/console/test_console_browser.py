"""The console in a real browser against a real node: login, the list, a task, actions, roles, escaping."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.support.wait import wait_until

from .conftest import ADMIN_TOKEN, VIEWER_TOKEN, XSS_DESCRIPTION, XSS_OUTPUT


def _rows(console):
    return console.page.locator("#tasks tbody tr[data-task]")


def test_login_keeps_the_token_in_the_tab_only_and_a_wrong_one_is_refused_plainly(console):
    page = console()
    page.login("not-a-token")
    expect(page.page.locator("#login-error")).to_contain_text("401")
    expect(page.page.locator("#nav")).to_be_hidden()

    # Submitted on the same page: the refusal shown is the last token's, so it goes as the new
    # token is sent, before the node answers (the submit handler runs within this click).
    page.page.fill("#token", ADMIN_TOKEN)
    error_shown = page.page.evaluate(
        "() => { document.querySelector('#login-form button').click();"
        " return !document.getElementById('login-error').hidden; }")
    assert error_shown is False
    expect(page.page.locator("#who")).to_have_text("ops (ADMINISTRATOR)")
    expect(_rows(page)).to_have_count(6)
    assert page.page.evaluate("sessionStorage.getItem('scheduler.token')") == ADMIN_TOKEN
    assert page.context.cookies() == [] and ADMIN_TOKEN not in page.page.url
    page.shot("tasks")

    page.page.click("#logout")
    expect(page.page.locator("#login")).to_be_visible()
    assert page.page.evaluate("sessionStorage.getItem('scheduler.token')") is None


def test_the_list_filters_and_sorts_on_the_node(console):
    page = console()
    page.login(ADMIN_TOKEN)
    expect(_rows(page)).to_have_count(6)

    page.page.fill("#filter-idPrefix", "alpha")
    expect(_rows(page)).to_have_count(2)
    expect(page.page.locator("#tasks-summary")).to_have_text("1–2 of 2 task(s)")
    page.page.fill("#filter-idPrefix", "")
    page.page.fill("#filter-labelSelector", "team=blue")
    expect(page.page.locator("#tasks tbody tr[data-task] a")).to_have_text(["alpha-2", "beta-1"])
    page.page.click("th button[data-sort=itemId]")  # ascending already: now descending
    expect(page.page.locator("#tasks tbody tr[data-task] a")).to_have_text(["beta-1", "alpha-2"])
    assert "labelSelector=team%3Dblue" in page.page.url and "sortBy=itemId%3Adesc" in page.page.url

    page.page.fill("#filter-labelSelector", "")
    page.page.select_option("#filter-status", "COMPLETED")
    expect(page.page.locator("#tasks tbody td.empty")).to_have_text("No task matches.")
    page.page.fill("#filter-labelSelector", "team=(")
    expect(page.page.locator("#problem")).to_contain_text("Invalid labelSelector")


def test_a_task_shows_its_fields_runs_and_output(console, node):
    page = console()
    page.login(ADMIN_TOKEN)
    page.page.click("#tasks a.task-link:text-is('alpha-1')")
    expect(page.page.locator("#task-id")).to_have_text("alpha-1")
    fields = page.page.locator("#task-fields")
    expect(fields.locator("dd[data-field=Schedule]")).to_have_text("every 1h (fixed rate)")
    expect(fields.locator("dd[data-field=Source]")).to_have_text(re.compile(r"/tasks\.d/alpha-1\.yaml:1$"))
    expect(fields.locator("dd[data-field=Run]")).to_have_text("shell: echo alpha-1 ran")
    expect(page.page.locator("#runs tr[data-run]")).to_have_count(1)
    expect(page.page.locator("#runs tr[data-run] td").nth(3)).to_have_text("success")
    expect(page.page.locator("#run-output")).to_have_text("alpha-1 ran\n")
    expect(page.page.locator("#next-runs li")).to_have_count(5)
    expect(page.page.locator("#run-strip rect")).to_have_count(1)
    page.shot("task")


def test_a_running_task_changes_status_on_the_page_without_a_reload(console, node, gate):
    page = console()
    page.login(ADMIN_TOKEN)
    page.open("#/task/gated")
    expect(page.page.locator("#task-status")).to_have_text("RUNNING")
    page.page.evaluate("window.__samePage = true")

    gate.touch()

    expect(page.page.locator("#task-status")).to_have_text("COMPLETED")
    expect(page.page.locator("#run-output")).to_have_text("gate-opened\n")
    assert page.page.evaluate("window.__samePage") is True  # the page was not loaded again


def test_cancel_then_retry_with_reset(console, node):
    page = console()
    page.login(ADMIN_TOKEN)
    page.open("#/task/long-runner")
    expect(page.page.locator("#task-status")).to_have_text("RUNNING")

    page.page.click("#action-cancel")
    expect(page.page.locator("#action-cancel")).to_have_text("Really cancel?")
    assert node.request("GET", "/cxs/tasks/long-runner", token=ADMIN_TOKEN)[1]["status"] == "RUNNING"  # one click does nothing
    page.page.click("#action-cancel")
    expect(page.page.locator("#task-status")).to_have_text("CANCELLED")
    expect(page.page.locator("#action-message")).to_have_text("Cancel: done.")
    expect(page.page.locator("#runs tr[data-run] td").nth(3)).to_have_text("cancelled")

    page.page.check("#retry-reset")
    page.page.click("#action-retry")
    expect(page.page.locator("#action-message")).to_have_text("Retry: done.")
    expect(page.page.locator("#task-status")).to_have_text(re.compile("SCHEDULED|RUNNING"))
    wait_until(lambda: node.request("GET", "/cxs/tasks/long-runner", token=ADMIN_TOKEN)[1]["status"] == "RUNNING",
               timeout=30, what="long-runner running again")
    expect(page.page.locator("#runs tr[data-run]")).to_have_count(2)
    page.page.click("#action-cancel")
    page.page.click("#action-cancel")
    expect(page.page.locator("#task-status")).to_have_text("CANCELLED")


def test_retry_settings_and_a_refused_action_are_shown(console, node):
    page = console()
    page.login(ADMIN_TOKEN)
    page.open("#/task/beta-1")
    expect(page.page.locator("#task-status")).to_have_text("SCHEDULED")
    page.page.fill("#config-max-retries", "7")
    page.page.fill("#config-retry-delay", "90")
    page.page.click("#retry-settings button[type=submit]")
    expect(page.page.locator("#task-fields dd[data-field='Max Retries']")).to_have_text("7 (override)")
    expect(page.page.locator("#task-fields dd[data-field='Retry Delay']")).to_have_text("1m30s (override)")
    assert node.request("GET", "/cxs/tasks/beta-1", token=ADMIN_TOKEN)[1]["overrides"] == {"maxRetries": 7, "retryDelay": 90000}

    page.page.click("#action-suspend")
    page.page.click("#action-suspend")
    expect(page.page.locator("#action-unsuspend")).to_be_visible()
    expect(page.page.locator("#action-run")).to_have_count(0)  # run now is refused while suspended
    page.page.click("#action-unsuspend")
    expect(page.page.locator("#action-suspend")).to_be_visible()
    page.page.fill("#config-max-retries", "-1")
    page.page.click("#retry-settings button[type=submit]")
    expect(page.page.locator("#action-message")).to_contain_text("whole number")
    assert node.request("GET", "/cxs/tasks/beta-1", token=ADMIN_TOKEN)[1]["overrides"]["maxRetries"] == 7  # intact


def test_a_viewer_sees_everything_and_no_action(console, node):
    page = console()
    page.login(VIEWER_TOKEN)
    expect(page.page.locator("#who")).to_have_text("grafana (VIEWER)")
    page.open("#/task/alpha-2")
    expect(page.page.locator("#task-fields dd[data-field=Labels]")).to_have_text("team=blue")
    expect(page.page.locator("#runs tr[data-run]")).to_have_count(1)
    assert page.page.locator("#actions, #retry-settings, button.action").count() == 0
    page.open("#/files")
    expect(page.page.locator("#files tr[data-file]")).to_have_count(6)
    assert page.page.locator("#action-reload").count() == 0
    # Even a hand-made request is refused by the node, and the answer says so.
    status, body = node.request("DELETE", "/cxs/tasks/alpha-2", token=VIEWER_TOKEN)
    assert status == 403 and "ADMINISTRATOR" in body["message"]


def test_markup_in_a_description_parameters_and_output_is_shown_as_text_and_runs_nothing(console, node):
    page = console()
    page.login(ADMIN_TOKEN)
    page.open("#/task/xss")
    expect(page.page.locator("#task-fields dd[data-field=Description]")).to_have_text(XSS_DESCRIPTION)
    expect(page.page.locator("#task-fields dd[data-field=Parameters]")).to_contain_text("<b onmouseover=alert(3)>bold</b>")
    expect(page.page.locator("#run-output")).to_have_text("\n".join(XSS_OUTPUT) + "\n")
    page.open("#/tasks?idPrefix=xss")
    expect(_rows(page)).to_have_count(1)
    page.open("#/timeline?idPrefix=xss")
    expect(page.page.locator("#timeline rect.bar")).to_have_count(1)

    assert page.page.evaluate("window.__pwned") is None
    assert page.page.locator("img, b").count() == 0  # no element was made from the data
    assert page.dialogs == [] and page.errors == []


def test_timeline_cluster_and_files(console, node):
    page = console()
    page.login(ADMIN_TOKEN)
    page.page.click("#nav a[data-view=timeline]")
    expect(page.page.locator("#timeline svg a text.row-label")).to_have_count(6)
    expect(page.page.locator("#timeline-caption")).to_contain_text("(1h, live)")
    page.shot("timeline")
    page.page.click("#zoom-in")
    expect(page.page.locator("#timeline-caption")).to_contain_text("(30m, live)")
    page.page.click("#pan-back")
    expect(page.page.locator("#timeline-caption")).not_to_contain_text("live")
    page.page.click("[data-range='1d']")
    expect(page.page.locator("#timeline-caption")).to_contain_text("(1d, live)")

    page.page.click("#nav a[data-view=cluster]")
    expect(page.page.locator("#nodes tr[data-node=node-1]")).to_have_count(1)
    page.shot("cluster")

    page.page.click("#nav a[data-view=files]")
    expect(page.page.locator("#files tr[data-file]")).to_have_count(6)
    expect(page.page.locator("#files-summary")).to_contain_text("0 rejected")
    page.page.click("#action-reload")
    expect(page.page.locator("#reload-message")).to_contain_text("Reloaded at")
    page.shot("files")
