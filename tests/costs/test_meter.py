"""The meter: its arithmetic on injected clocks, memory and GPU readers; real measurements."""

from __future__ import annotations

import os
import sys
import textwrap
import threading
from collections.abc import Collection
from pathlib import Path

import pandas as pd
import pytest

from civicml.costs.meter import Meter, Usage, measure, nvml_reader
from civicml.training.script import run_script

GB = 10**9


class Clocks:
    """Wall and thread-CPU clocks that move only when told (one CPU clock per thread)."""

    def __init__(self) -> None:
        self.wall = 100.0
        self.cpu: dict[int, float] = {}

    def now(self) -> float:
        return self.wall

    def thread_cpu(self) -> float:
        return self.cpu.get(threading.get_ident(), 0.0)

    def spend(self, seconds: float, wall: float | None = None) -> None:
        me = threading.get_ident()
        self.cpu[me] = self.cpu.get(me, 0.0) + seconds
        self.wall += seconds if wall is None else wall


class FakeGpu:
    def __init__(self, use: dict[int, int]) -> None:
        self.use = use
        self.asked: list[set[int]] = []

    def devices_in_use(self, pids: Collection[int]) -> dict[int, int]:
        self.asked.append(set(pids))
        return {p: n for p, n in self.use.items() if p in pids}


def meter(clocks: Clocks, rss: int = 2 * GB, gpu: FakeGpu | None = None) -> Meter:
    return Meter(
        rss=lambda: rss,
        gpu=gpu,
        thread_clock=clocks.thread_cpu,
        clock=clocks.now,
        interval_s=None,
    )


def test_one_measurement_counts_wall_cpu_and_memory_time() -> None:
    clocks = Clocks()
    m = meter(clocks)
    with measure(m) as work:
        clocks.spend(3.0, wall=4.0)
    assert work.usage == Usage(
        wall_s=4.0, cpu_s=3.0, peak_memory_bytes=2 * GB, memory_gb_s=8.0, gpu_s=0.0
    )


def test_nested_work_pauses_the_outer_measurement() -> None:
    clocks = Clocks()
    m = meter(clocks)
    with measure(m) as outer:
        clocks.spend(1.0)
        with measure(m) as inner:
            clocks.spend(5.0)
        clocks.spend(2.0)
    assert inner.usage.cpu_s == 5.0 and inner.usage.wall_s == 5.0
    assert outer.usage.cpu_s == 3.0 and outer.usage.wall_s == 3.0  # its own part only
    assert outer.usage.memory_gb_s + inner.usage.memory_gb_s == pytest.approx(2 * 8.0)


def test_concurrent_work_shares_memory_and_gpu_but_not_cpu() -> None:
    clocks = Clocks()
    gpu = FakeGpu({os.getpid(): 1})
    m = meter(clocks, gpu=gpu)
    first = m.start()
    started = threading.Event()
    done = threading.Event()
    holder: list[object] = []

    def other() -> None:
        holder.append(m.start())
        started.set()
        done.wait()
        clocks.spend(0.5, wall=0.0)  # this thread's own CPU
        m.end(holder[0])  # type: ignore[arg-type]

    worker = threading.Thread(target=other)
    worker.start()
    started.wait()
    clocks.spend(4.0)  # the first thread works 4 s while both are measured
    m.sample()
    done.set()
    worker.join()
    m.end(first)
    second = holder[0].usage  # type: ignore[attr-defined]
    assert first.usage.cpu_s == 4.0 and second.cpu_s == 0.5
    # 4 s of 2 GB and one GPU, shared by two pieces of work
    assert first.usage.memory_gb_s == pytest.approx(4.0) and second.memory_gb_s == 4.0
    assert first.usage.gpu_s == pytest.approx(2.0) and second.gpu_s == pytest.approx(2.0)
    assert all(os.getpid() in asked for asked in gpu.asked)


def test_a_watched_subprocess_gpu_is_charged_to_its_own_work() -> None:
    clocks = Clocks()
    gpu = FakeGpu({4242: 2})
    m = meter(clocks, gpu=gpu)
    with measure(m) as work, work.watching(4242):
        clocks.spend(0.0, wall=10.0)
        m.sample()
    assert work.usage.gpu_s == 20.0  # two devices for ten seconds
    with measure(m) as after:
        clocks.spend(0.0, wall=10.0)
    assert after.usage.gpu_s == 0.0  # no longer watched


def test_a_subprocess_adds_its_exact_cpu_and_peak() -> None:
    clocks = Clocks()
    m = meter(clocks, rss=GB)
    with measure(m) as work:
        work.add_subprocess(cpu_s=7.5, max_rss_bytes=3 * GB, wall_s=2.0)
    assert work.usage.cpu_s == 7.5
    assert work.usage.peak_memory_bytes == 4 * GB  # the process's and the script's peaks
    assert work.usage.memory_gb_s == 6.0


def test_usage_adds_up_with_the_larger_peak() -> None:
    total = Usage(1, 2, 10, 3, 4) + Usage(1, 1, 30, 1, 0)
    assert total == Usage(wall_s=2, cpu_s=3, peak_memory_bytes=30, memory_gb_s=4, gpu_s=4)


def test_without_nvml_there_is_no_gpu_reader() -> None:
    try:
        import pynvml  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        assert nvml_reader() is None
    else:  # pragma: no cover - only where nvidia-ml-py is installed
        pytest.skip("nvidia-ml-py is installed here")


def test_measuring_real_work_sees_cpu_and_memory() -> None:
    with measure() as work:
        block = bytearray(20_000_000)
        total = sum(i * i for i in range(300_000))
    assert total > 0 and len(block) == 20_000_000
    usage = work.usage
    assert usage.cpu_s > 0 and usage.wall_s > 0
    assert usage.peak_memory_bytes > 20_000_000 and usage.memory_gb_s > 0


@pytest.mark.skipif(sys.platform != "linux", reason="script mode's limits are Linux's")
def test_script_mode_reports_the_scripts_own_cpu_and_memory(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            block = bytearray(60_000_000)
            total = 0
            for i in range(3_000_000):
                total += i * i
            open(os.path.join(os.environ["CIVICML_MODEL_DIR"], "done.txt"), "w").write("ok")
            """
        )
    )
    with measure() as work:
        run_script(script, {"train": pd.DataFrame({"x": [1, 2]})}, workdir=tmp_path / "w")
    assert work.child_peak_bytes > 60_000_000  # the script's own peak, from wait4
    assert work.usage.cpu_s > 0.05  # its CPU, though this thread only waited
