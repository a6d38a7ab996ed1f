"""Provenance: what a report records about where it was made, and how two reports compare."""

from importlib.metadata import version

import pytest
import torch

from instructflow.tasks import provenance

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 sse4_2 avx avx2 fma avx512f avx512bw amx_tile amx_bf16 ht
processor\t: 1
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu sse2 sse4_2 avx avx2 fma avx512f avx512bw amx_tile amx_bf16 ht
"""


def test_cpuinfo_gives_the_model_and_only_its_vector_extensions():
    model, flags = provenance.parse_cpuinfo(X86)
    assert model == "Intel(R) Xeon(R) Platinum 8480+"
    assert flags == ["amx_bf16", "amx_tile", "avx", "avx2", "avx512bw", "avx512f", "fma", "sse4_2"]
    # and on ARM the Features line
    assert provenance.parse_cpuinfo("Features\t: fp asimd sve2 crc32\n")[1] == ["asimd", "sve2"]


def test_collect_records_machine_software_threads_seed_and_commit():
    prov = provenance.collect(seed=7, processes=2)
    assert prov["seed"] == 7 and prov["processes"] == 2
    assert prov["threads"] == torch.get_num_threads()
    assert prov["torch"] == torch.__version__
    assert prov["instructflow"] == version("instructflow")  # an installed copy has no commit
    for field in ("transformers", "cpu_model", "cpu_flags", "torch_cpu_capability", "git_commit"):
        assert prov[field] not in (None, "", "absent"), field
    assert "gpu" in prov and prov["git_clean"] in (True, False)
    assert "+dirty" not in prov["git_commit"]


def test_pin_threads_sets_torchs_thread_count():
    before = torch.get_num_threads()
    try:
        assert provenance.pin_threads(1)["threads"] == 1 == torch.get_num_threads()
        assert provenance.pin_threads(None)["threads"] == provenance.available_cores()
    finally:
        torch.set_num_threads(before)


def test_compare_says_when_two_reports_come_from_different_machines():
    a = provenance.collect(seed=0)
    assert provenance.compare(a, dict(a))["differences"] == {}
    b = a | {"cpu_model": "another CPU", "threads": a["threads"] + 1}
    result = provenance.compare(a, b)
    assert not result["same_machine"] and result["same_software"]
    assert set(result["differences"]) == {"cpu_model", "threads"}
    assert "ACROSS MACHINES" in provenance.describe_comparison(result)


@pytest.mark.parametrize("value", [["avx2", "fma"], "x", [0, 1, 2]])
def test_mlflow_tags_are_strings(value):
    tags = provenance.mlflow_tags({"cpu_flags": value})
    assert isinstance(tags["provenance.cpu_flags"], str)
