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
