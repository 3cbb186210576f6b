import pytest

from scheduler import cli, loader


def test_main_returns_the_exit_code_instead_of_exiting(tmp_path, capsys):
    path = tmp_path / "t.yaml"
    path.write_text("name: [")
    assert cli.main(["validate", str(path)]) == 1
    assert capsys.readouterr().out.startswith(f"{path}:2:1: invalid YAML")


@pytest.mark.parametrize(("argv", "code"), [([], 2), (["nonsense"], 2), (["--help"], 0), (["validate", "--help"], 0)])
def test_usage(argv, code, capsys):
    assert cli.main(argv) == code


def test_an_unexpected_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(loader, "load_directory", broken)
    assert cli.main(["validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == "scheduler: internal error: RuntimeError: disk on fire (run with --log-level debug for details)\n"
