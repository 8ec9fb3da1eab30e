"""Progress lines on long work (progress.py): done of total, rate, elapsed and time left, at most
one line per interval, worked out by hand on a fake clock."""
import pytest

from kddocre_ray import progress
from kddocre_ray.progress import Progress, clock


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (12.4, "12s"), (59.6, "1m00s"), (245, "4m05s"),
                                           (3600, "1h00m"), (3725, "1h02m")])
def test_clock_by_hand(seconds, text):
    assert clock(seconds) == text


def test_a_line_per_interval_with_rate_and_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    p = Progress("predict", total=1000, every=10, log=lines.append)
    now[0] = 105.0
    p.add(100)  # 5 s in: no line yet
    now[0] = 110.0
    p.add(100)  # 10 s, 200 done: 20/s, 800 left -> 40 s
    now[0] = 115.0
    p.add(300)  # within the interval: no line
    assert lines == ["[kddocre] predict: 200/1,000 documents, 20.0 documents/s, 10s, ETA 40s"]
    now[0] = 150.0
    p.add(500)
    p.end()  # done: no time left to show
    assert lines[-1] == "[kddocre] predict: 1,000/1,000 documents, 20.0 documents/s, 50s"


def test_without_a_total_no_time_left(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    lines: list[str] = []
    p = Progress("read", unit="rows", log=lines.append)
    now[0] = 4.0
    p.add(10)
    p.end()
    assert lines == ["[kddocre] read: 10 rows, 2.5 rows/s, 4s"]
