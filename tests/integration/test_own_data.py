"""A newcomer's own data end to end: ``init`` from a CSV sample, ``check``, a worker,
``produce --from``, ``tail``, and the example consumer that reads the predictions with
fastavro and the published schema only. The commands run in this process (click's
runner, the settings in its environment); the worker and the example in their own.

``RIVERLINE_OWN_DATA_EVENTS`` sets how many orders the CSV holds (default 300).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from click.testing import CliRunner, Result

from streams.cli.main import cli
from streams.cli.workerproc import WorkerProcess
from streams.kafka.broker import free_port
from streams.kafka.reading import records_to_end
from streams.kafka.topics import ensure_topics, pipeline_topic_configs, shared_topic_configs
from streams.settings import REPO_ROOT, Settings
from streams.spec import PipelineSpec, load_spec

pytestmark = pytest.mark.integration

N_EVENTS = int(os.environ.get("RIVERLINE_OWN_DATA_EVENTS", "300"))
EXAMPLE = REPO_ROOT / "examples" / "consume_predictions.py"
PREDICTION_SCHEMA = REPO_ROOT / "schemas" / "riverline" / "prediction.avsc"


def _orders_csv(n: int) -> str:
    """Seeded orders: big orders with many items come back more often."""
    rng = random.Random(23)
    lines = ["order_id,customer_id,placed_at,amount,items,channel,is_returned"]
    for i in range(n):
        items = rng.randint(1, 6)
        amount = round(rng.uniform(5, 40) * items, 2)
        returned = rng.random() < (0.7 if items >= 4 else 0.1)
        minute, second = divmod(i, 60)
        placed = f"2024-05-01T{10 + minute // 60:02d}:{minute % 60:02d}:{second:02d}Z"
        channel = rng.choice(["web", "shop", "app"])
        lines.append(
            f"o-{i:05d},c-{rng.randint(1, 20)},{placed},{amount},{items},{channel},"
            f"{str(returned).lower()}"
        )
        if i == 10:
            lines.append("o-broken,c-1,2024-05-01T10:00:00Z")  # too few cells: skipped
    return "\n".join(lines) + "\n"


@dataclass
class OwnRun:
    settings: Settings
    spec: PipelineSpec
    spec_path: Path
    produced: Result
    tail: Result


def _cli(settings: Settings, *args: str) -> Result:
    """``riverline ARGS`` with ``settings`` (as a child process would see them)."""
    env = {
        name: value
        for name, value in settings.child_env().items()
        if name.startswith("RIVERLINE_") or name == "NUMBA_CACHE_DIR"
    }
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


async def _forge(settings: Settings, topic: str) -> None:
    """A record on the predictions topic that Riverline did not write (no rl.mac)."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.effective_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"not a prediction", key=b"forged")
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def run(settings_factory, tmp_path_factory) -> OwnRun:
    root = Path(tmp_path_factory.mktemp("own-data"))
    shutil.copytree(REPO_ROOT / "schemas" / "riverline", root / "schemas" / "riverline")
    settings = settings_factory(
        web_port=free_port(),
        schemas_dir=root / "schemas",
        pipelines_dir=root / "pipelines",
        sink_enabled=False,
    )
    sample = root / "orders.csv"
    sample.write_text(_orders_csv(N_EVENTS))
    made = _cli(settings, "init", "orders", "--sample", str(sample))
    assert made.exit_code == 0, made.output
    spec_path = root / "pipelines" / "orders.toml"
    checked = _cli(settings, "check", str(spec_path))
    assert checked.exit_code == 0, checked.output
    spec = load_spec(spec_path, settings.schemas_dir)
    ensure_topics(
        settings.effective_bootstrap,
        shared_topic_configs(settings) + pipeline_topic_configs(settings, spec),
    )
    worker = WorkerProcess(settings, [spec_path], root / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        # First on the topic, so tail meets it before the predictions it waits for.
        asyncio.run(_forge(settings, spec.topics(settings.namespace).predictions))
        produced = _cli(settings, "produce", "--pipeline", str(spec_path), "--from", str(sample))
        assert produced.exit_code == 0, produced.output
        # Blocks until every prediction is there (the forged record does not count).
        tail = _cli(
            settings, "tail", "--pipeline", str(spec_path), "--from-beginning", "-n", str(N_EVENTS)
        )
    finally:
        code = worker.stop()
    assert code == 0, (root / "worker.log").read_text()[-3000:]
    return OwnRun(settings, spec, spec_path, produced, tail)


def test_produce_from_a_csv_sends_every_row_and_reports_the_unreadable_one(run: OwnRun) -> None:
    assert f"sent {N_EVENTS:,} events" in run.produced.stdout
    assert "skipped 1 lines that could not be read" in run.produced.stderr
    assert "3 cells where the header has 7" in run.produced.stderr


async def _raw_keys(settings: Settings, topic: str) -> list[tuple[str, str]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.effective_bootstrap, group_id=None)
    await consumer.start()
    try:
        return [
            (json.loads(m.value)["customer_id"], m.key.decode())
            async for m in records_to_end(consumer, [TopicPartition(topic, 0)], within=60)
        ]
    finally:
        await consumer.stop()


def test_raw_events_are_keyed_by_the_key_field(run: OwnRun) -> None:
    assert run.spec.key_field == "customer_id"
    keys = asyncio.run(_raw_keys(run.settings, run.spec.topics(run.settings.namespace).raw))
    assert len(keys) == N_EVENTS
    assert all(customer == key for customer, key in keys)


def test_tail_prints_every_prediction_as_json_and_skips_the_unsigned_record(run: OwnRun) -> None:
    assert run.tail.exit_code == 0, run.tail.output
    records = [json.loads(line) for line in run.tail.stdout.splitlines()]
    assert [r["event_id"] for r in records] == [f"o-{i:05d}" for i in range(N_EVENTS)]
    assert {r["pipeline"] for r in records} == {"orders"}
    assert all(isinstance(r["prediction"], bool) for r in records[1:])
    assert all(isinstance(r["event_ts"], int) for r in records)
    assert "skipped 1 records whose rl.mac did not verify" in run.tail.stderr


def test_the_example_reads_the_predictions_with_fastavro_and_the_schema_only(
    run: OwnRun,
) -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(EXAMPLE),
            "--bootstrap",
            run.settings.effective_bootstrap,
            "--topic",
            run.spec.topics(run.settings.namespace).predictions,
            "--schema",
            str(PREDICTION_SCHEMA),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == run.tail.stdout
    assert out.stderr.strip() == f"{N_EVENTS} predictions, 1 other records skipped"
