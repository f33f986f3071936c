import pytest


@pytest.fixture
def home(tmp_path):
    """A throwaway HOME for one test: its own store, cache and config."""
    folder = tmp_path / "home"
    folder.mkdir()
    return str(folder)
