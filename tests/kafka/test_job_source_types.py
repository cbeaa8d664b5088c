"""KafkaJobSource against the real broker: job types that come and go while it runs."""

from __future__ import annotations

from workflow_sdk.kafka.consumer import KafkaJobSource

from .kafka_support import create_topics, dispatch, drain_nothing, fetch_until, publish


def test_a_fetch_takes_only_the_types_asked_for(kafka_bootstrap: str, unique: str) -> None:
    """Pins: a fetch took every type's records whatever its caller could run
    (the supervisor asks for the types its idle workers serve)."""
    first, second = f"sel-a-{unique}", f"sel-b-{unique}"
    create_topics(kafka_bootstrap, [first, second])
    publish(kafka_bootstrap, first, [dispatch(first, f"a{i}", f"da{i}") for i in range(2)])
    publish(kafka_bootstrap, second, [dispatch(second, f"b{i}", f"db{i}") for i in range(2)])
    source = KafkaJobSource(kafka_bootstrap, [first, second])
    try:
        only_second: list[dict[str, object]] = []
        for _ in range(20):
            only_second += source.fetch(10, timeout=0.3, job_types={second})
            if len(only_second) >= 2:
                break
        assert sorted(str(job["id"]) for job in only_second) == ["b0", "b1"]
        assert source.fetch(10, timeout=0.5, job_types=set()) == []
        rest = fetch_until(source, 2)
        assert sorted(job["id"] for job in rest) == ["a0", "a1"]
    finally:
        source.close()


def test_a_removed_type_commits_what_is_done_and_leaves_the_rest_to_the_next_member(
    kafka_bootstrap: str, unique: str
) -> None:
    """Pins: a type no worker serves any more (a reload changed the
    handlers) kept its consumer and its records for ever. Now: a job of it
    fetched and not started is given back (neither done nor unfinished),
    ``remove_type`` commits what is done and leaves the group, and the
    group's next member gets the record given back (and those behind it),
    not the one done before it. The other type goes on."""
    kept, gone = f"kept-{unique}", f"gone-{unique}"
    create_topics(kafka_bootstrap, [kept, gone])
    publish(kafka_bootstrap, gone, [dispatch(gone, f"g{i}", f"dg{i}") for i in range(3)])
    source = KafkaJobSource(kafka_bootstrap, [kept, gone])
    member: KafkaJobSource | None = None
    try:
        jobs = {job["id"]: job for job in fetch_until(source, 3)}
        assert sorted(jobs) == ["g0", "g1", "g2"]
        assert source.held(gone) == 3 and source.held(kept) == 0
        source.mark_done(jobs["g0"])
        source.give_back(jobs["g1"])  # claimed, never started
        source.mark_done(jobs["g2"])
        assert source.held(gone) == 0
        assert source.stats.unfinished == 0, "given back is not unfinished"
        assert source.remove_type(gone) == 2
        assert source.job_types == [kept]
        member = KafkaJobSource(kafka_bootstrap, [gone])
        again = fetch_until(member, 2)
        assert [job["id"] for job in again] == ["g1", "g2"]
        assert drain_nothing(member, 2.0) == []
        publish(kafka_bootstrap, kept, [dispatch(kept, "k0", "dk0")])
        assert [job["id"] for job in fetch_until(source, 1)] == ["k0"]
    finally:
        source.close()
        if member is not None:
            member.close()


def test_an_added_type_is_consumed_in_its_group(kafka_bootstrap: str, unique: str) -> None:
    first, added = f"first-{unique}", f"added-{unique}"
    create_topics(kafka_bootstrap, [first, added])
    publish(kafka_bootstrap, added, [dispatch(added, "n0", "dn0")])
    source = KafkaJobSource(kafka_bootstrap, [first])
    try:
        assert drain_nothing(source, 1.0) == []
        source.add_type(added, f"grp-{unique}")
        assert source.job_types == sorted([first, added])
        assert source.groups[added] == f"grp-{unique}"
        [job] = fetch_until(source, 1)
        assert job["id"] == "n0"
    finally:
        source.close()
