import logging

import pytest

from scheduler.executors import Progress
from scheduler.executors.control import ControlReader


def append(path, text):
    with path.open("a", encoding="latin-1") as file:  # latin-1: a test can write a byte that is not UTF-8
        file.write(text)


@pytest.fixture
async def control(tmp_path, make_ctx):
    path = tmp_path / "control.jsonl"
    path.touch()
    ctx = make_ctx()
    return path, ctx, ControlReader(path, ctx)


async def test_complete_lines_become_checkpoints_and_steps(control):
    path, ctx, reader = control
    append(path, '{"checkpoint": {"offset": 1}}\n{"step": "load", "details": {"rows": 5}}\n')
    reader.read_new()
    append(path, '\n{"checkpoint": {"offset": 2}, "step": "save"}\n')
    reader.read_new()
    await ctx.drain()
    assert ctx.reports == [
        Progress(checkpoint={"offset": 1}),
        Progress(step="load", details={"rows": 5}),
        Progress(checkpoint={"offset": 2}),
        Progress(step="save"),
    ]
    assert ctx.checkpoint_data == {"offset": 2}


async def test_a_partial_line_waits_for_its_end(control):
    path, ctx, reader = control
    append(path, '{"step": "one"}\n{"step": "tw')
    reader.read_new()
    await ctx.drain()
    assert [p.step for p in ctx.reports] == ["one"]
    append(path, 'o"}\n')
    reader.read_new()
    await ctx.drain()
    assert [p.step for p in ctx.reports] == ["one", "two"]


async def test_the_final_read_takes_an_unterminated_last_line(control):
    path, ctx, reader = control
    append(path, '{"checkpoint": {"done": true}}')
    reader.read_new()
    reader.read_new(final=True)
    await ctx.drain()
    assert ctx.reports == [Progress(checkpoint={"done": True})]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"checkpoint": 5}', "checkpoint must be a JSON object"),
        ('{"step": 5}', "step must be a string"),
        ('{"step": "s", "details": [1]}', "details must be a JSON object"),
        ('{"details": {"a": 1}}', "details need a step"),
        ('{"progress": 50}', "unknown keys ['progress']"),
        ("{}", "expected a checkpoint or a step"),
        ("\xff", "not UTF-8 text (invalid start byte at byte 1)"),
    ],
)
async def test_a_malformed_line_is_logged_with_its_number_and_skipped(control, caplog, line, reason):
    path, ctx, reader = control
    append(path, f'{{"step": "before"}}\n{line}\n{{"step": "after"}}\n')
    with caplog.at_level(logging.WARNING):
        reader.read_new()
    await ctx.drain()
    assert [p.step for p in ctx.reports] == ["before", "after"]
    assert f"control.jsonl line 2 ignored: {reason}" in caplog.text
