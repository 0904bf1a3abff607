"""The registration state machine with fake time: when to Register, how long to back off."""

from __future__ import annotations

import pytest

from nvdp_node.domain.registration import Backoff, Registrar, RegState

KUBELET_A = ("dev", 1, 100)
KUBELET_B = ("dev", 2, 200)


def failing(reg: Registrar, now: float, kubelet: object = KUBELET_A) -> float:
    assert reg.due(now, kubelet, serving=True), f"a Register should be due at t={now}"
    reg.started(kubelet)
    return reg.failed(now, "kubelet said no")


def test_nothing_is_due_before_serving_or_without_a_kubelet_socket():
    reg = Registrar()
    assert not reg.due(0.0, KUBELET_A, serving=False)
    assert not reg.due(0.0, None, serving=True)
    assert reg.due(0.0, KUBELET_A, serving=True)


def test_back_off_doubles_from_one_second_up_to_thirty():
    reg, now, delays = Registrar(), 0.0, []
    for _ in range(8):
        delay = failing(reg, now)
        delays.append(delay)
        assert not reg.due(now + delay - 0.001, KUBELET_A, serving=True), "retried before the back-off ended"
        now += delay
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert reg.state is RegState.BACKING_OFF


def test_a_new_kubelet_socket_ends_the_back_off_and_restarts_it_at_one_second():
    reg, now = Registrar(), 0.0
    for _ in range(5):
        now += failing(reg, now)
    assert reg.backoff.delay == 16.0
    assert reg.due(now + 0.5, KUBELET_B, serving=True), "a re-created kubelet.sock must be tried at once"
    reg.started(KUBELET_B)
    assert reg.failed(now + 0.5, "still starting") == 1.0


def test_retry_in_says_how_long_until_the_back_off_ends():
    reg = Registrar()
    assert reg.retry_in(0.0) is None
    failing(reg, 10.0)
    assert reg.retry_in(10.25) == pytest.approx(0.75)
    assert reg.retry_in(20.0) == 0.0


def test_an_error_that_asks_for_a_longer_wait_gets_it():
    reg = Registrar()
    assert reg.due(0.0, KUBELET_A, serving=True)
    reg.started(KUBELET_A)
    assert reg.failed(0.0, "not a socket", at_least=5.0) == 5.0


def test_no_second_register_while_one_is_in_flight():
    reg = Registrar()
    reg.started(KUBELET_A)
    assert not reg.due(100.0, KUBELET_B, serving=True)


def test_success_holds_until_kubelet_socket_changes_or_the_stream_is_lost():
    reg = Registrar()
    reg.started(KUBELET_A)
    reg.succeeded()
    assert reg.registered and reg.registered_with == KUBELET_A
    assert not reg.due(1000.0, KUBELET_A, serving=True)
    assert reg.due(1000.0, KUBELET_B, serving=True), "kubelet restarted: register again"
    reg.lost()
    assert reg.state is RegState.IDLE
    assert reg.due(1000.0, KUBELET_A, serving=True), "a lost stream: register again without waiting"


def test_success_resets_the_back_off():
    reg, now = Registrar(), 0.0
    for _ in range(3):
        now += failing(reg, now)
    reg.started(KUBELET_A)
    reg.succeeded()
    reg.lost()
    assert failing(reg, now) == 1.0
    assert reg.registrations == 1 and reg.failures == 4


def test_a_backoff_is_ready_again_for_another_key():
    backoff = Backoff()
    backoff.failed(0.0, "serve")
    assert not backoff.ready(0.5, "serve")
    assert backoff.ready(0.5, "other")
    assert backoff.ready(1.0, "serve")
