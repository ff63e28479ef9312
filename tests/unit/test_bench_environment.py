from __future__ import annotations

import os
import sys
import time

import pytest

from faceproof.bench.environment import machine_info, process_cpu_s


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_process_cpu_seconds_grow_while_the_process_computes() -> None:
    before = process_cpu_s(os.getpid())
    assert before is not None and before > 0
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    after = process_cpu_s(os.getpid())
    assert after is not None and after >= before + 0.2


def test_an_absent_process_has_no_cpu_seconds() -> None:
    assert process_cpu_s(2**22 + 12345) is None  # above Linux's pid_max limit


def test_machine_info_names_the_cores_and_the_load() -> None:
    info = machine_info()
    assert info["cpus"] >= 1
    assert len(info["load_average"]) == 3
