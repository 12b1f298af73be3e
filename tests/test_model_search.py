"""The model search's table (benchmarks/model_search.py): projected times from the measured epoch
cost, per-seed and mean test accuracy, and which rows are on the Pareto front, per CPU."""

import pytest

from modules.model import HParams

CPU, OTHER_CPU = "AMD EPYC, 2 CPUs", "Intel Xeon, 2 CPUs"


@pytest.fixture(scope="module")
def model_search(import_benchmark):
    return import_benchmark("model_search")


def _records(cpu, name, hparams, epoch_seconds, tests, outside=100.0):
    common = {"cpu": cpu, "candidate": name, "hparams": hparams.to_dict(), "policy": "mixed_bfloat16"}
    records = [{**common, "kind": "cost", "epoch_seconds": epoch_seconds, "outside_training_seconds": outside}]
    return records + [{**common, "kind": "accuracy", "seed": seed, "test_accuracy": test}
                      for seed, test in zip((42, 7), tests, strict=False)]


def _rows(model_search, records):
    header, rows = model_search.pareto_table(records)
    return {row[header.index("candidate")]: dict(zip(header, row, strict=True)) for row in rows}


def test_projection_mean_and_pareto_front(model_search):
    small, large = HParams(epochs=20), HParams(num_blocks=3, epochs=30)
    records = (_records(CPU, "small", small, 10.0, [0.940, 0.942])
               + _records(CPU, "large", large, 15.0, [0.950])
               + _records(CPU, "slow-and-worse", small.replace(epochs=40), 10.0, [0.939, 0.941])
               + _records(CPU, "untrained", small, 10.0, []))
    rows = _rows(model_search, records)
    assert rows["small"]["Trainer s (projected)"] == "200" and rows["small"]["pipeline s (projected)"] == "300"
    assert rows["large"]["pipeline s (projected)"] == "550"
    assert rows["small"]["test acc per seed"] == "0.9400 / 0.9420" and rows["small"]["mean test acc"] == "0.9410"
    assert rows["large"]["blocks x convs, filters"] == "3 x 2, 32-64-128"
    assert [name for name, row in rows.items() if row["Pareto"] == "yes"] == ["small", "large"]
    assert rows["untrained"]["mean test acc"] == "-"


def test_rows_of_another_cpu_never_dominate(model_search):
    fast_elsewhere = _records(OTHER_CPU, "small", HParams(epochs=20), 1.0, [0.99])
    rows = model_search.pareto_table(_records(CPU, "small", HParams(epochs=20), 10.0, [0.94]) + fast_elsewhere)[1]
    assert [row[-1] for row in rows] == ["yes", "yes"]


def test_the_smallest_cost_of_an_architecture_and_each_seeds_latest_accuracy_count(model_search):
    hparams = HParams(epochs=10)
    records = (_records(CPU, "c", hparams, 50.0, [0.90, 0.91]) + _records(CPU, "c", hparams, 10.0, [0.93])
               + _records(CPU, "c-longer", hparams.replace(epochs=20), 30.0, []))  # same architecture, busier run
    rows = _rows(model_search, records)
    assert rows["c"]["Trainer s (projected)"] == "100" and rows["c-longer"]["Trainer s (projected)"] == "200"
    assert rows["c"]["test acc per seed"] == "0.9300 / 0.9100"


def test_a_table_without_results_is_a_one_line_error(model_search, tmp_path, capsys):
    missing = tmp_path / "none.jsonl"
    assert model_search.main(["--table-only", "--results", str(missing)]) == 1
    assert capsys.readouterr().err.strip() == f"error: no results at {missing}: measure first (without --table-only)"
