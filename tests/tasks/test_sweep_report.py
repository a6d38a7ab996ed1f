"""tasks.sweep_report.provenance_line: what a sweep's first line says about where and how it ran."""

from instructflow.tasks.sweep_report import provenance_line

PROV = {
    "profile": "tiny",
    "seeds": [0, 1, 2],
    "cpu_model": "AMD EPYC",
    "cpu_flags": ["avx2"],
    "torch_cpu_capability": "AVX2",
    "threads": 1,
    "torch": "2.13.0+cpu",
    "transformers": "5.23.0",
    "git_commit": "6c5b2d0aaaaaaaa",
    "git_clean": True,
}


def test_the_line_names_threads_workers_wall_time_and_load():
    prov = PROV | {
        "workers": 3,
        "wall_s": 5400.0,
        "started_utc": "2026-12-02T06:29:24Z",
        "load_average": {"start": [2.09, 2.2, 2.0], "end": [4.5, 4.0, 3.9]},
    }
    line = provenance_line(prov)
    assert "1 thread per seed, 3 seeds at once" in line
    assert "commit 6c5b2d0aaa (clean), 90.0 min from 2026-12-02T06:29:24Z" in line
    assert "(1-minute load average 2.1 at the start, 4.5 at the end)" in line


def test_one_worker_reads_as_one_seed_at_once():
    line = provenance_line(PROV | {"threads": 2, "workers": 1})
    assert "2 threads per seed, 1 seed at once," in line


def test_an_older_aggregate_without_them_still_renders():
    line = provenance_line(PROV)
    assert line.endswith(
        "1 thread, torch 2.13.0+cpu, transformers 5.23.0, commit 6c5b2d0aaa (clean)"
    )
