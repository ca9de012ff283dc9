"""imagerec.cpus: a container's CPU quota caps what the affinity mask offers."""

from imagerec import cpus


def test_the_cpu_share_is_the_affinity_mask_capped_by_a_container_quota(monkeypatch):
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: None)
    assert cpus.cpu_share() == 4
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 2.5)
    assert cpus.cpu_share() == 2
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 0.5)
    assert cpus.cpu_share() == 1  # never fewer than one
