"""Markers of the data_processing tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "xla: run with the XLA-compiled augmentation stages (slower to compile)")
