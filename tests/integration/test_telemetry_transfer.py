"""Export and import over real HTTP against Daphne: the export streams as the client reads, in flat memory."""

from __future__ import annotations

import urllib.request
from datetime import UTC, datetime, timedelta

import psutil
import pytest

from devices.services.synth import synth_history
from testing.http import call
from testing.partitions import new_partitions_dropped

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_partitions_left():
    with new_partitions_dropped():  # committed samples of 2026-01-01..03 would stay for other tests' maintenance
        yield


def export_lines(url: str, token: str) -> tuple[int, int]:
    """(lines, chunks read): read in 64 KiB pieces, as a client that streams the answer to disk would."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    lines = chunks = 0
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert answer.status == 200
        while piece := answer.read(64 * 1024):
            lines += piece.count(b"\n")
            chunks += 1
    return lines, chunks


def test_the_export_streams_from_daphne_in_flat_memory(stack, people):
    devices, tokens, _ = people
    a1, blab = devices["a1"][0], devices["blab"][0]
    synth_history(device_ids=[a1], start=T0, end=T0 + timedelta(seconds=20_000), interval=1)
    synth_history(device_ids=[blab], start=T0, end=T0 + timedelta(seconds=200_000), interval=1)
    web = stack.start_web()
    rss = psutil.Process(web.popen.pid)
    base = stack.web + "/api/telemetry/export?format=csv&devices="

    small, _ = export_lines(base + a1, tokens["alice"])
    after_small = rss.memory_info().rss
    large, chunks = export_lines(base + blab, tokens["alice"])
    grown = rss.memory_info().rss - after_small

    assert (small, large) == (1 + 2 * 20_000, 1 + 2 * 200_000)  # a header, then two metrics a sample
    assert chunks > 100
    # The large export is ~25 MB of CSV; gathered in memory first, the web process would grow by more.
    assert grown < 8 * 2**20, f"web process grew by {grown / 2**20:.1f} MiB exporting {large} lines"


def test_an_export_of_someone_elses_device_is_404_and_an_import_of_it_is_rejected(stack, people):
    devices, tokens, _ = people
    stack.start_web()
    bown = devices["bown"][0]
    assert call("GET", stack.web + f"/api/telemetry/export?devices={bown}", token=tokens["alice"]).status == 404
    line = f'{{"device":"{bown}","ts":"2026-01-01T00:00:00Z","data":{{"t":1}}}}\n'.encode()
    reply = call("POST", stack.web + "/api/telemetry/import", raw=line, token=tokens["alice"],
                 content_type="application/x-ndjson")
    assert reply.status == 200 and reply.json()["rejected"] == {"unknown_device": 1}
    reply = call("POST", stack.web + "/api/telemetry/import", raw=line, token=tokens["bob"],
                 content_type="application/x-ndjson")
    assert reply.json()["imported"] == 1
