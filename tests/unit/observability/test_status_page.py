from __future__ import annotations

import time

from streams.observability.status_page import (
    Notice,
    RecentNotices,
    alert_notice,
    dead_letter_notice,
    render_status_html,
)


def _status() -> dict:
    notices = RecentNotices(size=2)
    for i in range(3):
        notices.add(Notice(time.time(), "phishing", "dead_letter", "not_json", f"bad {i}"))
    notices.add(
        Notice(
            time.time(), "phishing", "dead_letter", "wrong_type", "<script>x</script>", "raw:0:9"
        )
    )
    return {
        "worker": {"ready": True, "bootstrap": "127.0.0.1:9092", "uptime_s": 12},
        "pipelines": {
            "phishing": {
                "spec": "phishing@abc",
                "features": "phishing_features@def",
                "events_ok": 1250,
                "dead_letters": 2,
                "topics": ["phishing.raw"],
                "models": [
                    {
                        "name": "phishing-lr",
                        "version": 3,
                        "stage": "champion",
                        "samples_seen": 1250,
                        "metrics": {"accuracy": 0.8928},
                    },
                ],
            }
        },
        "dead_letters": notices.as_dicts(),
        "alerts": [],
    }


def test_page_shows_pipelines_models_and_recent_notices() -> None:
    page = render_status_html(_status())
    assert "Pipeline phishing" in page
    assert "phishing-lr@3" in page
    assert "champion" in page
    assert "accuracy 0.8928" in page
    assert "wrong_type" in page
    assert "raw:0:9" in page


def test_recent_notices_keep_the_newest_only() -> None:
    reasons = [n["message"] for n in _status()["dead_letters"]]
    assert reasons == ["<script>x</script>", "bad 2"]


def test_untrusted_text_is_escaped() -> None:
    page = render_status_html(_status())
    assert "<script>x</script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page


def test_lag_and_checkpoint_age_are_shown() -> None:
    status = _status()
    status["pipelines"]["phishing"].update(consumer_lag=17, checkpoint_age_s=4.2)
    page = render_status_html(status)
    assert "<td>17</td>" in page
    assert "<td>4 s</td>" in page
    status["pipelines"]["phishing"]["checkpoint_age_s"] = None
    assert "none yet" in render_status_html(status)


def test_dead_letters_read_back_name_their_pipeline_and_origin() -> None:
    headers = {
        "rl.error.topic": "ns.phishing.raw",
        "rl.error.partition": "0",
        "rl.error.offset": "9",
        "rl.error.stage": "ingest",
        "rl.error.class": "not_json",
        "rl.error.message": "the value is not valid JSON",
    }
    notice = dead_letter_notice(headers, 1.0, {"ns.phishing.raw": "phishing"})
    assert notice == Notice(
        1.0, "phishing", "dead_letter", "not_json", "the value is not valid JSON",
        "ingest ns.phishing.raw:0:9",
    )  # fmt: skip
    assert dead_letter_notice(headers, 1.0, {"other.raw": "other"}) is None


def test_alerts_of_other_pipelines_are_left_out() -> None:
    alert = {"pipeline": "phishing", "kind": "drift", "model": "lr@2", "message": "ADWIN fired"}
    notice = alert_notice(alert, 2.0, ["phishing"])
    assert notice is not None
    assert (notice.kind, notice.reason, notice.where) == ("alert", "drift", "lr@2")
    assert alert_notice(alert, 2.0, ["sensor"]) is None


def test_a_serving_worker_shows_its_versions_and_their_staleness() -> None:
    status = _status()
    status["pipelines"]["phishing"]["serving"] = [
        {"model": "phishing-lr@7", "stage": "champion", "staleness_samples": 42, "age_s": 3.4},
        {"model": "phishing-nb@7", "stage": "shadow", "staleness_samples": None, "age_s": None},
    ]
    page = render_status_html(status)
    assert "Served from the learner" in page
    assert "<td>phishing-lr@7</td><td>champion</td><td>42</td><td>3 s</td>" in page
    assert "<td>phishing-nb@7</td><td>shadow</td><td>?</td><td>none yet</td>" in page
    assert "Served from the learner" not in render_status_html(_status())
