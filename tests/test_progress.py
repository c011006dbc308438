"""A sweep stage prints raykd's lines (trial k of N, method, result, early stops, errors), not Tune's tables."""
from __future__ import annotations

import pytest
import ray

from conftest import start_local_ray
from raykd.console import run_command


def test_a_stage_says_each_trial_its_method_result_early_stop_and_error(local_ray, tmp_path, capsys) -> None:
    from ray import tune
    from ray.tune import RunConfig, TuneConfig, Tuner, grid_search

    from raykd.tune.progress import StageProgress

    def trial(config) -> None:
        if config["method"] == "kd" and config["kd"]["T"] == 8.0:
            raise RuntimeError("diverged")
        for epoch in range(1, 3 if config["method"] == "none" else 2):  # kd's trial "stopped" after epoch 1 of 2
            tune.report({"val_top1": 10.0 * epoch + config.get("kd", {}).get("T", 0), "best_val_top1": 10.0 * epoch
                         + config.get("kd", {}).get("T", 0), "epoch": epoch})

    def body() -> int:
        progress = StageProgress("search", 3, "val_top1", "max", epochs=2)
        Tuner(trial, param_space=grid_search([{"method": "none"}, {"method": "kd", "kd": {"T": 4.0}},
                                              {"method": "kd", "kd": {"T": 8.0}}]),
              tune_config=TuneConfig(max_concurrent_trials=1),
              run_config=RunConfig(name="stage", storage_path=str(tmp_path), verbose=0, callbacks=[progress])).fit()
        return 0

    capsys.readouterr()
    assert run_command(body, []) == 0
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith(("==", "[search"))]
    assert lines == ["== search stage: 3 trials of 2 epochs ==",
                     "[search 1/3] none started", "[search 1/3] none done: best val_top1 20.00",
                     "[search 2/3] kd started (T=4)",
                     "[search 2/3] kd done: best val_top1 14.00, stopped early by ASHA at epoch 1",
                     "[search 3/3] kd started (T=8)"], out
    assert "[search 3/3] kd failed: see " in err and "error.txt" in err


@pytest.mark.ray
def test_only_a_task_that_has_not_started_is_said_to_wait() -> None:
    """prepare_teacher's "teacher training waits for ..." line: never while the training runs (it prints its
    epochs), and Ray's state API (served by the dashboard) tells the two apart."""
    import time

    from ray.util.state import get_task

    from raykd.tune.teachers import is_running

    ray.shutdown()  # this test needs a Ray of its own (one CPU, the dashboard): not the module's local_ray
    start_local_ray(num_cpus=1, include_dashboard=True)
    try:
        busy = ray.remote(num_cpus=1)(lambda: time.sleep(300))
        running, waiting = busy.remote(), busy.remote()  # one CPU: the second cannot start

        def state(ref) -> str | None:
            try:
                attempts = get_task(ref, timeout=30)
            except Exception:  # the dashboard still starting, or slow under load
                return None
            attempts = attempts if isinstance(attempts, list) else [attempts] if attempts else []
            return attempts[-1].state if attempts else None

        deadline = time.time() + 60
        while (state(running) != "RUNNING" or state(waiting) is None) and time.time() < deadline:
            time.sleep(1)
        if state(running) != "RUNNING":
            pytest.skip("Ray's state API did not report the running task within 60 s (dashboard under load)")
        assert is_running(running) and not is_running(waiting), (state(running), state(waiting))
    finally:
        ray.shutdown()
