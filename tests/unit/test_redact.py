"""What a URL looks like wherever it is shown: no password, no query values, the rest as written."""

import pytest

from scheduler.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:secret@host/hook?api_key=abc&v=2#top", "http://user:***@host/hook?api_key=***&v=***#top"),
        ("https://hooks.example.com/x?token=abc&flag&empty=", "https://hooks.example.com/x?token=***&flag&empty="),
        ("https://:token@host/", "https://:***@host/"),
        ("https://user@host/", "https://user@host/"),  # no password to hide
        ("http://host/p?email=a@b.example", "http://host/p?email=***"),
        ("https://registry.example.com/@scope/pkg", "https://registry.example.com/@scope/pkg"),
        # Passwords written without escaping: hidden whole all the same.
        ("http://user:pa/ss@host/x", "http://user:***@host/x"),
        ("http://user:p@ss@host/x", "http://user:***@host/x"),
        # Store URLs, as before: the user and hosts stay.
        ("mongodb://admin:hunter2@db1:27017,db2/tasks?replicaSet=rs0", "mongodb://admin:***@db1:27017,db2/tasks?replicaSet=***"),
        ("mongodb+srv://u:p%40ss@cluster.example.com/sched", "mongodb+srv://u:***@cluster.example.com/sched"),
        ("sqlite:///var/lib/scheduler/scheduler.db", "sqlite:///var/lib/scheduler/scheduler.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("memory:", "memory:"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert redact_url(shown) == shown  # showing a shown URL again changes nothing


def test_redact_text_finds_the_urls_in_a_message():
    message = (
        "GET http://user:secret@host/hook?api_key=abc failed: TooManyRedirects: "
        "0, message='', url='http://host/hook?api_key=abc'. Retry (or see <https://h/doc?id=7>)."
    )
    assert redact_text(message) == (
        "GET http://user:***@host/hook?api_key=*** failed: TooManyRedirects: "
        "0, message='', url='http://host/hook?api_key=***'. Retry (or see <https://h/doc?id=***>)."
    )
    assert redact_text("exit code 3: no URL here, nothing changes") == "exit code 3: no URL here, nothing changes"
