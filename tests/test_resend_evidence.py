"""Publishers resend on evidence of loss (publisher.py): an analysis that is only behind gets
nothing again, however long it is away; messages lost while the analysis was away are resent
as soon as the acknowledgements of later messages (or the ranges it holds behind the gap) show
them lost, and the session ends with every sample stored once and the offline episodes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from rekindle import contract
from rekindle.analysis.service import AnalysisService
from rekindle.ingest.publisher import Publisher
from rekindle.ingest.sources.base import Chunk
from rekindle.mqtturl import MqttSettings
from tests.servers import InfluxD, Mosquitto
from tests.test_durable import counts, expected, session_chunks, stored_episodes
from tests.test_e2e_ack import SITE, analysis, wait_for

DEADLINE_S = 300.0
#: Pause between two messages: a session publishing live (not a replay at max), so that the
#: publisher is never quiet and its retransmission timer never fires.
PACE_S = 0.005


def publish(pub: Publisher, chunk: Chunk) -> None:
    pub.publish(
        chunk.to_message(SITE, pub.session, pub.next_seq(chunk.device, chunk.stream), pub.run)
    )
    time.sleep(PACE_S)


def run_with_outage(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path, db: str, *, persistent: bool
) -> tuple[Publisher, int, list[Chunk], AnalysisService]:
    """Publish a simulated session live; stop the analysis a fifth in, for at least three
    retransmission timeouts of the publisher while it goes on publishing, then start it again
    on the same checkpoint; end the session. Returns the publisher, how many messages were
    published while the analysis was away, the chunks and the second analysis (stopped)."""
    influxd.create_database(db)
    chunks = session_chunks(seed=12, minutes=12)
    settings = MqttSettings.from_url(mqtt_broker.url)
    first = analysis(mqtt_broker, influxd, db, tmp_path, persistent=persistent).start()
    second: AnalysisService | None = None
    pub = Publisher(settings, SITE, "o1", device="sim", ack_window=5000, resend_after_s=1.0)
    try:
        with pub:
            pub.send_status("sim", "online", chunks[0].start)
            head = len(chunks) // 5
            for chunk in chunks[:head]:
                publish(pub, chunk)
            wait_for(lambda: pub.unconfirmed == 0, "the first fifth acknowledged")
            first.stop()
            away_since, sent = time.monotonic(), head
            timeout = pub.retransmission_timeout
            while time.monotonic() - away_since < 3 * timeout and sent < len(chunks) * 3 // 4:
                publish(pub, chunks[sent])
                sent += 1
            assert time.monotonic() - away_since >= 3 * timeout, "the session is too short"
            away = sent - head
            second = analysis(mqtt_broker, influxd, db, tmp_path, persistent=persistent).start()
            for chunk in chunks[sent:]:
                publish(pub, chunk)
            pub.send_status("sim", "end", chunks[-1].end)
            pub.flush(timeout=DEADLINE_S)
        assert second.wait_sessions_finished(1, timeout=DEADLINE_S)
    finally:
        if second is not None:
            second.stop()
    return pub, away, chunks, second


def test_an_analysis_that_is_behind_gets_nothing_again(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    """With a persistent session the broker keeps what the analysis has not taken: it was only
    behind, and a timer that resends after seconds without progress would send it all again."""
    db = "evidence_behind"
    pub, away, chunks, second = run_with_outage(mqtt_broker, influxd, tmp_path, db, persistent=True)
    assert away > 100
    assert (pub.resent, pub.resent_lost, pub.resent_timeout) == (0, 0, 0)
    samples, features, episodes = expected(chunks)
    assert counts(influxd, db, "o1") == (samples, features, 1)
    assert stored_episodes(influxd, db, "o1") == episodes
    assert second.stats.gaps == 0


def test_messages_lost_while_the_analysis_was_away_are_resent_on_evidence(
    mqtt_broker: Mosquitto, influxd: InfluxD, tmp_path: Path
) -> None:
    """Without a persistent session nobody takes the messages while the analysis is away: they
    are lost. The restarted analysis holds what comes after the gap and says so (``held``);
    the publisher resends exactly what is missing, long before its timer would, and nothing
    is stored twice or missing."""
    db = "evidence_lost"
    pub, away, chunks, second = run_with_outage(
        mqtt_broker, influxd, tmp_path, db, persistent=False
    )
    assert away > 100
    assert pub.resent_timeout == 0
    assert away <= pub.resent_lost <= away + 50, (away, pub.resent_lost)
    samples, features, episodes = expected(chunks)
    assert counts(influxd, db, "o1") == (samples, features, 1)
    assert stored_episodes(influxd, db, "o1") == episodes
    assert (second.stats.gaps, second.stats.missing_seq) == (0, 0)


def test_held_ranges_round_trip_and_bad_ones_are_named() -> None:
    ack = contract.AckMessage(
        "s",
        "x",
        1.0,
        (contract.AckPosition("d", "eda", "r1", 4),),
        {},
        0,
        (contract.HeldRange("r1", 9, 12), contract.HeldRange("r1", 15, 15)),
    )
    assert contract.decode_ack(*contract.encode_ack(ack)) == ack
    topic, payload = contract.encode_ack(ack)
    assert b'"held"' in payload
    plain = contract.encode_ack(contract.AckMessage("s", "x", 1.0, (), {}))
    assert b"held" not in plain[1]  # revision-2 readers see the same ack as before
    bad = payload.replace(b'"first":9', b'"first":"9"')
    with pytest.raises(contract.ContractError, match=r"held\[0\].*integer first and last"):
        contract.decode_ack(topic, bad)


def test_the_cli_states_the_checkpoint_cadence_it_uses(capsys: pytest.CaptureFixture[str]) -> None:
    from rekindle.analysis.committer import CHECKPOINT_EVERY_S  # noqa: PLC0415
    from rekindle.cli import build_parser  # noqa: PLC0415

    with pytest.raises(SystemExit):
        build_parser().parse_args(["analysis", "--help"])
    assert f"(default {CHECKPOINT_EVERY_S:g});" in " ".join(capsys.readouterr().out.split())
