"""setup_logging: sd-daemon priority prefixes on the journal, JSON, re-setup on reload, quiet grpc."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest

from nvdp_node.app.logs import QUIET_LOGGERS, setup_logging

log = logging.getLogger("nvdp.test")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[tuple[TextIO, dict[str, str]]]:
    """A stream plus the environment systemd gives a service whose stderr is that journal stream."""
    with (tmp_path / "stderr").open("w+", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        yield stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def written(stream: TextIO) -> list[str]:
    stream.flush()
    stream.seek(0)
    return stream.read().splitlines()


@pytest.mark.parametrize(
    "level,prefix",
    [(logging.CRITICAL, "<2>"), (logging.ERROR, "<3>"), (logging.WARNING, "<4>"), (logging.INFO, "<6>"), (logging.DEBUG, "<7>")],
    ids=["critical", "error", "warning", "info", "debug"],
)
def test_on_the_journal_each_line_starts_with_its_sd_daemon_priority(journal, level, prefix):
    stream, environ = journal
    setup_logging("debug", stream=stream, environ=environ)
    log.log(level, "hello")
    assert written(stream) == [f"{prefix}{logging.getLevelName(level)} nvdp.test: hello"]


def test_on_the_journal_every_line_of_a_traceback_carries_the_priority(journal):
    stream, environ = journal
    setup_logging("info", stream=stream, environ=environ)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = written(stream)
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>ValueError: boom"


@pytest.mark.parametrize(
    "environ",
    [{}, {"JOURNAL_STREAM": "1:2"}, {"JOURNAL_STREAM": "garbage"}],
    ids=["no-journal-stream", "another-stream", "garbage"],
)
def test_elsewhere_lines_have_no_prefix(journal, environ):
    stream, _ = journal
    setup_logging("info", stream=stream, environ=environ)
    log.warning("hello")
    assert written(stream) == ["WARNING nvdp.test: hello"]


def test_a_stream_without_a_file_descriptor_is_not_the_journal():
    stream = io.StringIO()
    setup_logging("info", stream=stream, environ={"JOURNAL_STREAM": "1:2"})
    log.warning("hello")
    assert stream.getvalue() == "WARNING nvdp.test: hello\n"


def test_json_lines_carry_the_priority_as_a_field(journal):
    stream, _ = journal
    setup_logging("info", "json", stream=stream, environ={})
    log.warning("hello")
    [line] = written(stream)
    entry = json.loads(line)
    assert (entry["priority"], entry["level"], entry["message"]) == (4, "warning", "hello")


def test_on_the_journal_json_lines_get_the_prefix_in_front_of_the_object(journal):
    stream, environ = journal
    setup_logging("info", "json", stream=stream, environ=environ)
    log.error("hello")
    [line] = written(stream)
    assert line.startswith("<3>{") and json.loads(line[3:])["message"] == "hello"


def test_a_second_call_replaces_its_own_handler_and_keeps_the_others(journal):
    stream, _ = journal
    other = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(other)
    first = io.StringIO()
    setup_logging("info", stream=first, environ={})
    setup_logging("warning", stream=stream, environ={})
    log.info("dropped at the new level")
    log.warning("to the new stream")
    assert first.getvalue() == ""
    assert written(stream) == ["WARNING nvdp.test: to the new stream"]
    assert other in logging.getLogger().handlers
    assert other.stream.getvalue() == "to the new stream\n"


@pytest.mark.parametrize("name", QUIET_LOGGERS)
def test_grpcs_own_loggers_log_nothing_below_critical(name):
    stream = io.StringIO()
    setup_logging("debug", stream=stream, environ={})
    logging.getLogger(name).error("Unexpected [DecodeError] raised by servicer method")
    log.error("ours")
    assert stream.getvalue() == "ERROR nvdp.test: ours\n"
