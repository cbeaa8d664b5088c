"""workflow_sdk.cpus: affinity and cgroup CPU quotas, from sample file contents.

The real cgroup (a child process in a v1 cgroup with a quota) is tested in
tests/process/test_resource_probes.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workflow_sdk import cpus
from workflow_sdk.cpus import (
    CgroupMembership,
    CpuQuota,
    Mount,
    cgroup_directories,
    decide,
    find_cgroup_mount,
    parse_cfs,
    parse_cpu_max,
    parse_mountinfo,
    parse_proc_cgroup,
    usable_cpus,
)

# /proc/self/cgroup and mountinfo of a hybrid v1 system (this project's machines).
V1_CGROUP = """\
9:name=systemd:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
"""
V1_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
# A systemd v1 system where cpu and cpuacct share one hierarchy.
V1_JOINED_CGROUP = "11:cpu,cpuacct:/system.slice/worker.service\n0::/system.slice/worker.service\n"
V1_JOINED_MOUNTINFO = (
    "25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:8 - cgroup cgroup rw,cpu,cpuacct\n"
)
# A pure v2 system (systemd's unified layout).
V2_CGROUP = "0::/system.slice/worker.service\n"
V2_MOUNTINFO = (
    "26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 "
    "cgroup2 rw,nsdelegate,memory_recursiveprot\n"
)


# -- /proc/self/cgroup -------------------------------------------------------


def test_proc_cgroup_v1_finds_the_cpu_hierarchy_not_cpuacct() -> None:
    assert parse_proc_cgroup(V1_CGROUP) == CgroupMembership(v2="/", v1_cpu="/")
    text = "3:cpuacct:/acct\n2:cpu:/limited/job\n"
    assert parse_proc_cgroup(text) == CgroupMembership(v2=None, v1_cpu="/limited/job")


def test_proc_cgroup_joined_controllers_and_v2() -> None:
    assert parse_proc_cgroup(V1_JOINED_CGROUP) == CgroupMembership(
        v2="/system.slice/worker.service", v1_cpu="/system.slice/worker.service"
    )
    assert parse_proc_cgroup(V2_CGROUP) == CgroupMembership(v2="/system.slice/worker.service")


def test_proc_cgroup_keeps_colons_in_paths_and_skips_junk() -> None:
    text = "garbage\n\n5:cpu:/odd:name\n0::/a:b\n"
    assert parse_proc_cgroup(text) == CgroupMembership(v2="/a:b", v1_cpu="/odd:name")
    assert parse_proc_cgroup("") == CgroupMembership()


# -- mountinfo ---------------------------------------------------------------


def test_mountinfo_fields_and_escapes() -> None:
    line = (
        "40 31 0:37 /docker/abc /sys/fs/cgroup/my\\040cpu rw,relatime shared:1 master:2 - "
        "cgroup cgroup rw,cpu,cpuacct\n"
    )
    (mount,) = parse_mountinfo(line + "broken line without dash\n")
    assert mount == Mount(
        "/docker/abc", "/sys/fs/cgroup/my cpu", "cgroup", ("rw", "cpu", "cpuacct")
    )


def test_find_cgroup_mount() -> None:
    mounts = parse_mountinfo(V1_MOUNTINFO)
    v1 = find_cgroup_mount(mounts, "v1")
    v2 = find_cgroup_mount(mounts, "v2")
    assert v1 is not None and v1.mount_point == "/sys/fs/cgroup/cpu"
    assert v2 is not None and v2.mount_point == "/sys/fs/cgroup/unified"
    assert find_cgroup_mount(parse_mountinfo(V2_MOUNTINFO), "v1") is None
    # cpuacct alone is not the cpu controller.
    acct_only = [m for m in mounts if m.mount_point.endswith("cpuacct")]
    assert find_cgroup_mount(acct_only, "v1") is None


# -- directories -------------------------------------------------------------


def test_cgroup_directories_own_first_then_ancestors_to_the_mount() -> None:
    mount = Mount("/", "/sys/fs/cgroup", "cgroup2", ())
    assert cgroup_directories(mount, "/system.slice/worker.service") == [
        "/sys/fs/cgroup/system.slice/worker.service",
        "/sys/fs/cgroup/system.slice",
        "/sys/fs/cgroup",
    ]
    assert cgroup_directories(mount, "/") == ["/sys/fs/cgroup"]


def test_cgroup_directories_of_a_mount_rooted_below_the_hierarchy() -> None:
    """A container's mount shows its own cgroup as the mount's root."""
    mount = Mount("/docker/abc", "/sys/fs/cgroup/cpu", "cgroup", ("cpu",))
    assert cgroup_directories(mount, "/docker/abc/inner") == [
        "/sys/fs/cgroup/cpu/inner",
        "/sys/fs/cgroup/cpu",
    ]
    assert cgroup_directories(mount, "/docker/abc") == ["/sys/fs/cgroup/cpu"]
    # Not under the mount's root (a prefix of a name is not a parent).
    assert cgroup_directories(mount, "/docker/abcdef") == ["/sys/fs/cgroup/cpu"]
    assert cgroup_directories(mount, "/other") == ["/sys/fs/cgroup/cpu"]


# -- quota files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("max 100000\n", None),
        ("max\n", None),
        ("150000 100000\n", (150000, 100000)),
        ("50000 100000", (50000, 100000)),
    ],
)
def test_parse_cpu_max(text: str, expected: tuple[int, int] | None) -> None:
    assert parse_cpu_max(text) == expected


@pytest.mark.parametrize("text", ["", "150000", "a b", "100 0", "-5 100000", "1 2 3"])
def test_parse_cpu_max_refuses_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"cpu\.max"):
        parse_cpu_max(text)


def test_parse_cfs() -> None:
    assert parse_cfs("-1\n", "100000\n") is None
    assert parse_cfs("150000\n", "100000\n") == (150000, 100000)
    for quota, period in (("x", "100000"), ("0", "100000"), ("-2", "100000"), ("1", "0")):
        with pytest.raises(ValueError, match="cfs"):
            parse_cfs(quota, period)


def test_quota_rounds_down_and_is_at_least_one() -> None:
    assert CpuQuota(150000, 100000, "v1", "/").cpus == 1
    assert CpuQuota(50000, 100000, "v1", "/").cpus == 1
    assert CpuQuota(400000, 100000, "v2", "/").cpus == 4
    assert CpuQuota(399999, 100000, "v2", "/").cpus == 3


# -- the verdict ---------------------------------------------------------------


def test_decide_takes_the_smaller_and_says_why() -> None:
    v1 = CpuQuota(150000, 100000, "v1", "/sys/fs/cgroup/cpu/x")
    assert decide(2, None).describe() == "2 CPUs (affinity)"
    assert decide(1, None).describe() == "1 CPU (affinity)"
    assert decide(2, v1).describe() == "1 CPU (cgroup v1 quota 150000/100000 us)"
    v2 = CpuQuota(800000, 100000, "v2", "/sys/fs/cgroup")
    assert (
        decide(2, v2).describe() == "2 CPUs (affinity; cgroup v2 cpu.max 800000/100000 us allows 8)"
    )
    # A tie names the quota: the limit someone set on purpose.
    assert decide(2, CpuQuota(200000, 100000, "v2", "/")).source.startswith("cgroup v2")
    assert decide(0, None).count == 1


def test_decide_without_an_affinity_mask_uses_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 6)
    verdict = decide(None, None)
    assert (verdict.count, verdict.source) == (6, "cpu_count")
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: None)
    assert decide(None, None).count == 1


# -- a fake file tree ------------------------------------------------------------


def build_tree(root: Path, cgroup: str, mountinfo: str, files: dict[str, str]) -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(cgroup)
    (root / "proc/self/mountinfo").write_text(mountinfo)
    for name, text in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_v1_quota_of_the_own_cgroup(tmp_path: Path) -> None:
    cg = "2:cpuacct:/\n1:cpu:/jobs/a\n0::/\n"
    root = build_tree(
        tmp_path,
        cg,
        V1_MOUNTINFO,
        {
            "/sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
            "/sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
            "/sys/fs/cgroup/cpu/jobs/a/cpu.cfs_quota_us": "150000\n",
            "/sys/fs/cgroup/cpu/jobs/a/cpu.cfs_period_us": "100000\n",
        },
    )
    verdict = usable_cpus(root, affinity=2)
    assert verdict.describe() == "1 CPU (cgroup v1 quota 150000/100000 us)"
    assert verdict.quota is not None
    assert verdict.quota.directory == "/sys/fs/cgroup/cpu/jobs/a"


def test_a_parents_quota_applies_to_a_nested_cgroup(tmp_path: Path) -> None:
    """systemd's CPUQuota= on a slice, or a container's limit, sits above the process."""
    root = build_tree(
        tmp_path,
        V2_CGROUP,
        V2_MOUNTINFO,
        {
            "/sys/fs/cgroup/system.slice/cpu.max": "300000 100000\n",
            "/sys/fs/cgroup/system.slice/worker.service/cpu.max": "max 100000\n",
        },
    )
    verdict = usable_cpus(root, affinity=8)
    assert verdict.describe() == "3 CPUs (cgroup v2 cpu.max 300000/100000 us)"
    assert verdict.quota is not None and verdict.quota.directory == "/sys/fs/cgroup/system.slice"


def test_the_tightest_of_several_quotas_wins(tmp_path: Path) -> None:
    root = build_tree(
        tmp_path,
        V2_CGROUP,
        V2_MOUNTINFO,
        {
            "/sys/fs/cgroup/system.slice/cpu.max": "190000 100000\n",
            "/sys/fs/cgroup/system.slice/worker.service/cpu.max": "150000 100000\n",
        },
    )
    verdict = usable_cpus(root, affinity=8)
    assert verdict.quota is not None and verdict.quota.quota_us == 150000


def test_joined_v1_controllers_in_a_systemd_service(tmp_path: Path) -> None:
    service = "/sys/fs/cgroup/cpu,cpuacct/system.slice/worker.service"
    root = build_tree(
        tmp_path,
        V1_JOINED_CGROUP,
        V1_JOINED_MOUNTINFO,
        {f"{service}/cpu.cfs_quota_us": "250000", f"{service}/cpu.cfs_period_us": "100000"},
    )
    assert usable_cpus(root, affinity=4).describe() == "2 CPUs (cgroup v1 quota 250000/100000 us)"


def test_max_and_missing_files_mean_no_limit(tmp_path: Path) -> None:
    root = build_tree(
        tmp_path / "v2max",
        V2_CGROUP,
        V2_MOUNTINFO,
        {"/sys/fs/cgroup/system.slice/worker.service/cpu.max": "max 100000\n"},
    )
    assert usable_cpus(root, affinity=2).describe() == "2 CPUs (affinity)"
    # The hybrid layout: the cgroup2 mount has no cpu controller, so no cpu.max.
    bare = build_tree(tmp_path / "bare", V1_CGROUP, V1_MOUNTINFO, {})
    assert usable_cpus(bare, affinity=3).describe() == "3 CPUs (affinity)"
    # No /proc files at all (not Linux, or a sandbox).
    assert usable_cpus(tmp_path / "nothing", affinity=2).describe() == "2 CPUs (affinity)"


def test_a_malformed_file_is_skipped_with_a_note(tmp_path: Path) -> None:
    root = build_tree(
        tmp_path,
        V2_CGROUP,
        V2_MOUNTINFO,
        {"/sys/fs/cgroup/system.slice/worker.service/cpu.max": "lots 100000\n"},
    )
    verdict = usable_cpus(root, affinity=2)
    assert verdict.count == 2
    assert len(verdict.notes) == 1
    assert "worker.service: cpu.max quota is 'lots'" in verdict.notes[0]


def test_this_process() -> None:
    """On the real files: a sane answer that the affinity mask bounds."""
    verdict = usable_cpus()
    assert 1 <= verdict.count <= len(os.sched_getaffinity(0))
    assert verdict.describe().startswith(f"{verdict.count} CPU")
