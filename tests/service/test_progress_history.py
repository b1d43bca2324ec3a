"""The job monitor keeps a bounded history of the bound for the dashboard's plot."""

from __future__ import annotations

import math

from service.settings import ServiceSettings
from service.worker import JobMonitor
from verifier.verify import Progress


def test_history_is_kept_thinned_and_json_safe(tmp_path):
    monitor = JobMonitor("job", 1, ServiceSettings(data_dir=tmp_path))
    monitor.report(Progress("crown", 0.1, lower_bound=-math.inf))
    for i in range(1000):
        monitor.report(Progress("bab", 0.2 + i, domains_done=i, lower_bound=-1.0 + i / 1000))
    monitor.report(Progress("bab", 2000.0, lower_bound=math.inf))
    snap = monitor.snapshot()
    assert snap is not None and snap["lower_bound"] is None  # no infinities in JSON
    history = snap["history"]
    assert 2 <= len(history) <= JobMonitor.HISTORY_POINTS
    assert history[0]["domains_done"] == 0 and history[-1]["domains_done"] == 999
    bounds = [h["lower_bound"] for h in history]
    assert bounds == sorted(bounds)  # time order is kept
