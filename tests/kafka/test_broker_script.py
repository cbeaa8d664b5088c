"""scripts/kafka.py's own rules, without a broker."""

from __future__ import annotations

from .conftest import kafka_script


def test_a_cluster_id_that_would_read_as_an_option_is_drawn_again() -> None:
    dash_first = b"\xf8" + bytes(15)
    # That draw encodes to "-AAA...": "--cluster-id -AAA..." fails the storage
    # tool's parser (one broker start in 64 did, before).
    assert kafka_script.base64.urlsafe_b64encode(dash_first).decode().startswith("-")
    draws = iter([dash_first, bytes(16)])
    assert kafka_script._cluster_id(lambda: next(draws)) == "A" * 22


def test_cluster_ids_are_22_url_safe_characters() -> None:
    ids = {kafka_script._cluster_id() for _ in range(200)}
    assert len(ids) == 200
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    for cluster_id in ids:
        assert len(cluster_id) == 22 and set(cluster_id) <= allowed
        assert not cluster_id.startswith("-")


def test_an_extra_listener_listens_on_its_port_and_advertises_the_proxy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    text = kafka_script._server_properties(tmp_path, 9092, 9093, {"SUP1": (40001, 50001)})
    lines = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert lines["listeners"].endswith(",SUP1://127.0.0.1:40001")
    assert lines["advertised.listeners"] == ("PLAINTEXT://127.0.0.1:9092,SUP1://127.0.0.1:50001")
    assert lines["listener.security.protocol.map"].endswith(",SUP1:PLAINTEXT")
    assert lines["inter.broker.listener.name"] == "PLAINTEXT"
