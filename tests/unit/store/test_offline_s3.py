"""The offline store on S3, against a real S3-compatible server: moto's, on a local port.

``moto[server]`` is in the dev extras (``make install``); without it these tests skip. The
server runs from this interpreter's environment, so it is the version the extras pin.
"""

from __future__ import annotations

import importlib.util
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from streams.kafka.broker import free_port
from streams.settings import Settings
from streams.store.offline import OfflineStore
from streams.store.sink import OfflineSink
from tests.unit.store.test_sink import CATALOG, SPEC, _prediction

BUCKET = "riverline-test"
DAY_MS = 1_795_000_000_000  # 2026-11-18 UTC


def _has_moto_server() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("moto", "flask"))


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"moto_server did not listen on port {port}: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a local S3 server with the bucket :data:`BUCKET`."""
    if not _has_moto_server():
        pytest.skip("moto[server] is not installed here: it is in the dev extras (make install)")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc, log)
        endpoint = f"127.0.0.1:{port}"
        admin = pafs.S3FileSystem(
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            scheme="http",
            endpoint_override=endpoint,
            allow_bucket_creation=True,
        )
        admin.create_dir(BUCKET)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def s3_url(s3_endpoint: str) -> str:
    """A store of its own in the bucket, with credentials and options in the URL."""
    prefix = f"store-{secrets.token_hex(4)}"
    return (
        f"s3://testing:testing@{BUCKET}/{prefix}"
        f"?endpoint_override={s3_endpoint}&scheme=http&region=us-east-1"
    )


def _rows(n: int, start: int = 0) -> list[dict]:
    return [{"event_id": f"e{i}", "prediction": i % 2 == 0} for i in range(start, start + n)]


def _keys(store: OfflineStore) -> list[str]:
    listed = store.filesystem.get_file_info(pafs.FileSelector(store.root, recursive=True))
    return sorted(i.path[len(store.root) + 1 :] for i in listed if i.is_file)


def test_write_read_and_file_for_through_an_s3_url(tmp_path: Path, s3_url: str) -> None:
    settings = Settings.from_env(home=tmp_path, bootstrap=None, store_url=s3_url)
    store = OfflineStore.from_settings(settings)
    assert store.url.startswith(f"s3://{BUCKET}/store-")
    assert "testing:" not in repr(store)
    for _ in range(2):  # the same range twice: replaced, not duplicated
        path = store.write("events", "p", "p.events", 1, [0, 1, 2], [DAY_MS] * 3, _rows(3))
    store.write("events", "p", "p.events", 1, [3, 4], [DAY_MS] * 2, _rows(2, 3))
    assert _keys(store) == [
        "events/pipeline=p/date=2026-11-18/p.events+1+0-2.parquet",
        "events/pipeline=p/date=2026-11-18/p.events+1+3-4.parquet",
    ]
    table = OfflineStore(s3_url).read("events", "p")  # another reader, same URL
    assert sorted(table.column("_offset").to_pylist()) == [0, 1, 2, 3, 4]
    assert set(table.column("date").to_pylist()) == {"2026-11-18"}
    assert store.file_for("events", "p.events", 1, 0, 2, "p") == path
    assert store.file_for("events", "p.events", 1, 5, 9, "p") is None
    assert store.read("labels").num_rows == 0


def test_a_partial_block_moves_between_machines_through_s3(tmp_path: Path, s3_url: str) -> None:
    sinks = []
    for machine in ("machine-a", "machine-b"):
        settings = Settings.from_env(home=tmp_path / machine, bootstrap=None, store_url=s3_url)
        store = OfflineStore.from_settings(settings)
        kinds = {"phishing.predictions": "predictions"}
        sinks.append(OfflineSink(SPEC, CATALOG, store, kinds=kinds, block_size=4))
    first, second = sinks
    first.add([_prediction(o) for o in range(6)])
    first.flush()
    assert second.add([_prediction(o) for o in range(4, 10)]) == 4  # 4 and 5 were stored
    second.flush()
    store = OfflineStore(s3_url)
    assert sorted(store.read("predictions").column("_offset").to_pylist()) == list(range(10))
    assert [Path(k).name for k in _keys(store)] == [
        "phishing.predictions+0+0-3.parquet",
        "phishing.predictions+0+4-7.parquet",
        "phishing.predictions+0+8-11.parquet",
    ]
