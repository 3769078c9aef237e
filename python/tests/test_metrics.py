"""A hub's /metrics read by the Prometheus client library's own OpenMetrics parser, as a
Prometheus server would read it: the families, their types, and counters that moved."""

import subprocess
import urllib.error
import urllib.request

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

import taskhub
from conftest import KEY, binary


def scrape(hub, token):
    url = hub.url.replace("ws://", "http://") + "/metrics"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        return {f.name: f for f in text_string_to_metric_families(answer.read().decode())}


def sample(families, family, name, **labels):
    for s in families[family].samples:
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no {name} {labels} in {family}")


def test_metrics_parse_as_openmetrics_and_count_the_work(hub):
    token = subprocess.run(
        [binary("taskhub"), "--hub", hub.url, "--key", KEY, "token", "create", "--stats"],
        capture_output=True, text=True, check=True).stdout.strip()
    with pytest.raises(urllib.error.HTTPError) as refused:
        scrape(hub, "th1.not-a-token")
    assert refused.value.code == 401
    worker = hub.worker("--queue", "py-metrics")
    try:
        with taskhub.connect(hub.url, key=KEY) as h:
            results = h.submit("py-metrics", range(10), kind="square")
        assert len(results) == 10
        families = scrape(hub, token)
    finally:
        worker.kill()
        worker.wait()
    assert families["taskhub_tasks_acked"].type == "counter"
    assert sample(families, "taskhub_tasks_put", "taskhub_tasks_put_total",
                  queue="py-metrics") == 10
    assert sample(families, "taskhub_tasks_acked", "taskhub_tasks_acked_total",
                  queue="py-metrics") == 10
    assert families["taskhub_queue_depth"].type == "gauge"
    assert sample(families, "taskhub_queue_depth", "taskhub_queue_depth",
                  queue="py-metrics") == 0
    assert families["taskhub_task_latency_seconds"].type == "histogram"
    assert sample(families, "taskhub_task_latency_seconds",
                  "taskhub_task_latency_seconds_count") == 10
    assert sample(families, "taskhub_task_latency_seconds",
                  "taskhub_task_latency_seconds_bucket", le="+Inf") == 10
    assert sample(families, "taskhub_sessions", "taskhub_sessions", role="worker") == 1
