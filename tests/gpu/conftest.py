import pytest


def pytest_collection_modifyitems(items):
    # Everything under tests/gpu is the GPU tier.
    for item in items:
        item.add_marker(pytest.mark.gpu)
