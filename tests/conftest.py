"""Test tiers: everything runs on the CPU except tests marked `gpu`, which skip without a GPU."""

import functools

import pytest


def pytest_addoption(parser):
    parser.addoption("--update", action="store_true",
                     help="rewrite generated/ from the templates and print the diff instead of failing")


@functools.cache
def gpu_unavailable_reason() -> str | None:
    from lstmgen.errors import NoGPUError
    from lstmgen.runtime.device import require_gpu

    try:
        require_gpu()
    except NoGPUError as reason:
        return str(reason)
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and gpu_unavailable_reason():
        skip = pytest.mark.skip(reason=f"GPU tier needs a CUDA GPU: {gpu_unavailable_reason()}")
        for item in gpu_items:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """How many Hypothesis examples the GPU property tests ran (tests record one each)."""
    examples = sum(
        1
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "teardown"
        for name, _ in getattr(report, "user_properties", ())
        if name == "hypothesis_example"
    )
    if examples:
        terminalreporter.write_line(f"GPU property tests: {examples} Hypothesis examples run")
