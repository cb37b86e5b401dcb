"""bench/measure.py's timing on the CPU: the two sides of a cell take turns."""

from lstmgen.bench.measure import interleaved_medians, median_ms


def test_sides_take_turns_so_a_drift_weighs_on_both_alike():
    calls = []
    clock = {"now": 1.0}

    def drifting_timer(run):
        # Each timed run takes a little longer than the one before, whichever side it is.
        run()
        clock["now"] += 0.1
        return clock["now"]

    runs = {side: (drifting_timer, lambda side=side: calls.append(side)) for side in ("ours", "cudnn")}
    medians = interleaved_medians(runs, repeats=21, warmup=3)
    assert calls == ["ours", "cudnn"] * 24  # 3 warm-up rounds, then 21 timed, in turns
    # Equal runs under the same drift: one turn apart, where one side's repeats before the
    # other's would put them 21 turns (2.1) apart.
    assert abs(medians["cudnn"] - medians["ours"] - 0.1) < 1e-9


def test_one_side_alone_is_the_median_of_its_repeats():
    times = iter([5.0, 1.0, 3.0, 2.0, 4.0])
    assert median_ms(lambda run: next(times), lambda: None, repeats=5, warmup=2) == 3.0
