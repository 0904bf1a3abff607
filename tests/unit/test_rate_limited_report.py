"""RateLimitedReport: one line per interval for a flood, with fake time (``now`` is passed in)."""

from __future__ import annotations

from nvdp_node.adapters.plugin_handlers import RateLimitedReport


def test_the_first_event_is_reported_at_once():
    report = RateLimitedReport("undecodable request")
    assert report.record(100.0, "to /x: bad") == "1 undecodable request in the last minute, e.g. to /x: bad"


def test_events_within_the_interval_are_counted_not_reported():
    report = RateLimitedReport("undecodable request")
    report.record(100.0, "a")
    assert [report.record(100.0 + i, "b") for i in range(1, 60)] == [None] * 59
    assert report.total == 60


def test_the_count_is_reported_once_the_interval_has_passed_with_the_last_example():
    report = RateLimitedReport("undecodable request")
    report.record(100.0, "a")
    report.record(110.0, "b")
    report.record(120.0, "c")
    assert report.flush(159.9) is None
    assert report.flush(160.0) == "2 undecodable requests in the last minute, e.g. c"
    assert report.flush(500.0) is None, "reported once"


def test_due_in_says_when_the_pending_count_can_be_reported():
    report = RateLimitedReport("failed request")
    report.record(100.0, "a")
    assert report.due_in(110.0) is None, "nothing pending yet"
    report.record(110.0, "b")
    assert report.due_in(110.0) == 50.0


def test_a_forced_flush_reports_the_pending_count_before_the_interval():
    report = RateLimitedReport("failed request")
    report.record(100.0, "a")
    report.record(101.0, "b")
    assert report.flush(102.0, force=True) == "1 failed request in the last minute, e.g. b"


def test_an_event_after_a_quiet_interval_is_reported_at_once_again():
    report = RateLimitedReport("undecodable request")
    report.record(100.0, "a")
    assert report.record(161.0, "b") == "1 undecodable request in the last minute, e.g. b"


def test_an_event_after_the_interval_also_reports_the_ones_still_pending():
    report = RateLimitedReport("undecodable request")
    report.record(100.0, "a")
    report.record(110.0, "b")
    assert report.record(170.0, "c") == "2 undecodable requests in the last minute, e.g. c"
    assert report.flush(1000.0) is None
