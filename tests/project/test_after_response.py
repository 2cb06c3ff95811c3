"""A request's work after its response: kept until the response's close, then run once."""

import logging

from project.middleware import AfterResponse


def test_work_waits_for_the_close_and_runs_once_each(caplog):
    done = []
    after = AfterResponse()
    after.add(lambda: done.append("log line"))
    after.add(lambda: 1 / 0)  # a failure is logged and does not stop the rest
    after.add(lambda: done.append("metrics"))
    assert done == []

    with caplog.at_level(logging.ERROR, logger="project.middleware"):
        after.run()
    assert done == ["log line", "metrics"]
    assert "Work after the response failed." in caplog.text

    after.add(lambda: done.append("late"))  # after the close: at once
    after.run()  # a second close runs nothing twice
    assert done == ["log line", "metrics", "late"]
