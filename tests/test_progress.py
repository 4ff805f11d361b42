"""Plain progress lines when the output is not a terminal (`make demo > log`)."""

import io

from calderalab.progress import PlainProgress, make_progress


def test_plain_lines_at_start_each_tenth_and_done():
    out = io.StringIO()
    bar = PlainProgress(out, min_interval=0.0)
    with bar:
        task = bar.add_task("compress uniform", total=30)
        for done in range(1, 31):
            bar.update(task, completed=done)
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("compress uniform: started (0 s)")
    assert [line.split(": ", 1)[1].split(" (")[0] for line in lines[1:]] == [f"{3 * i}/30" for i in range(1, 10)] + ["30/30 done"]


def test_plain_lines_are_throttled_but_the_end_is_always_printed():
    out = io.StringIO()
    bar = PlainProgress(out, min_interval=3600.0)
    task = bar.add_task("evaluate", total=100)
    for done in range(1, 101):
        bar.update(task, advance=1, description="evaluate baseline")
    assert done == 100
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].split("] ", 1)[1].startswith("evaluate baseline: 100/100 done")


def test_not_a_terminal_gives_plain_progress(capsys):
    assert isinstance(make_progress(), PlainProgress)  # pytest's captured stderr is not a tty
