"""Pytest fixtures for the system tests (a real systemd 252 in systemd-nspawn).

Loaded for every test run through tests/conftest.py, so it does nothing at
import or collection time beyond importing the standard library: the image is
built, and stale boxes cleaned, only when a test asks for ``system_image`` or
``system_box``.

    pytestmark = pytest.mark.system

    def test_unit(system_box):
        box = system_box()                   # booted, always stopped afterwards
        box.systemctl("is-system-running")

Environment:
    NVDP_SYSTEMBOX_HOME            cache and state directory (default /var/tmp/nvdp-systembox)
    NVDP_SYSTEMBOX_EXTRA_PACKAGES  extra Debian packages for the image (comma/space separated)
    NVDP_SYSTEMBOX_MIRROR          Debian mirror for mmdebstrap
    NVDP_TEST_SLOW=1               also run the tests marked ``slow``
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Callable, Iterator

import pytest

from tests.system.nspawn import DEFAULT_MIRROR, DEFAULT_PACKAGES, TIMINGS, Box, Image, missing_host_requirements

#: Debian packages of the session image. Extend this (rather than building
#: further images) when a system test needs more in the box: every change
#: rebuilds the image once (~25-35 s), after which it is cached.
SYSTEM_IMAGE_PACKAGES: tuple[str, ...] = (*DEFAULT_PACKAGES, "iproute2")
SYSTEM_IMAGE_NAME = "nvdp-system"


def _extra_packages() -> list[str]:
    return [p for p in re.split(r"[\s,]+", os.environ.get("NVDP_SYSTEMBOX_EXTRA_PACKAGES", "")) if p]


def release_image(suite: str) -> Image:
    """The session image's packages on Debian SUITE (``nvdp-system-trixie``, ...); not built yet.

    systemd 257 (trixie) boots in this host's nspawn 252 with the same flags
    as 252 (see README.md).
    """
    return Image(
        SYSTEM_IMAGE_NAME if suite == "bookworm" else f"{SYSTEM_IMAGE_NAME}-{suite}",
        suite=suite,
        packages=SYSTEM_IMAGE_PACKAGES,
        extra_packages=_extra_packages(),
        mirror=os.environ.get("NVDP_SYSTEMBOX_MIRROR", DEFAULT_MIRROR),
    )


@pytest.fixture(scope="session")
def system_image() -> Image:
    """The session's Debian bookworm image, built once with mmdebstrap and cached.

    Skips (and says why) if the host cannot run boxes: not root, or
    systemd-nspawn / mmdebstrap / nsenter missing.
    """
    why = missing_host_requirements()
    if why:
        reason = "system tests need a host that can run systemd-nspawn: " + "; ".join(why)
        print(f"\n[systembox] SKIP: {reason}")
        pytest.skip(reason)
    Box.clean_stale()
    image = release_image("bookworm")
    image.ensure()
    return image


@pytest.fixture
def system_box(system_image: Image, request: pytest.FixtureRequest) -> Iterator[Callable[..., Box]]:
    """Factory: ``system_box(name=None, **Box kwargs)`` returns a started Box.

    Every box it made is stopped (and its state removed) when the test ends,
    whatever the outcome. ``image=`` may override the session image.
    """
    boxes: list[Box] = []
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:18] or "box"

    def make(name: str | None = None, *, timeout: float = 90, **kw: object) -> Box:
        image = kw.pop("image", system_image)
        box = Box(name or f"{stem}-{secrets.token_hex(3)}", image, **kw)  # type: ignore[arg-type]
        boxes.append(box)
        box.start(timeout=timeout)
        return box

    try:
        yield make
    finally:
        errors = []
        for box in reversed(boxes):
            try:
                box.stop()
            except Exception as exc:  # keep stopping the others
                errors.append(f"{box.name}: {exc!r}")
        if errors:
            pytest.fail("could not stop boxes: " + "; ".join(errors), pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (a Debian dist-upgrade) run only with NVDP_TEST_SLOW=1."""
    if os.environ.get("NVDP_TEST_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow (downloads a Debian release): run it with NVDP_TEST_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Timings of image builds and box start/stop, if any box ran in this session."""
    if not TIMINGS:
        return
    totals: dict[str, list[float]] = {}
    for label, secs in TIMINGS:
        totals.setdefault(label, []).append(secs)
    terminalreporter.section("systembox timings")
    for label, xs in totals.items():
        terminalreporter.write_line(
            f"{label:<48} n={len(xs):<3} min={min(xs):6.2f}s  mean={sum(xs) / len(xs):6.2f}s  max={max(xs):6.2f}s"
        )
