import os
import string

from scheduler.node import ensure_admin_token


def test_admin_token_is_private_hex_and_never_replaced(tmp_path):
    path = tmp_path / "state" / "admin.token"
    ensure_admin_token(path)
    token = path.read_text().strip()
    ensure_admin_token(path)

    assert path.read_text().strip() == token
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert len(token) == 64


def test_generated_tokens_never_look_like_an_option(tmp_path):
    # `scheduler task-list --token "$TOKEN"` must work: argparse reads a leading '-' as an option.
    for i in range(200):
        path = tmp_path / f"{i}.token"
        ensure_admin_token(path)
        assert set(path.read_text().strip()) <= set(string.hexdigits)
