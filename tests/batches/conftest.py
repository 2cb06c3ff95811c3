"""Batch tests keep their files in a folder of their own, not in DATA_DIR."""

import pytest

from batches.storage import batch_storage


@pytest.fixture(autouse=True)
def _batch_files(settings, tmp_path):
    settings.BATCH_FILES_DIR = tmp_path / "files"
    batch_storage.cache_clear()
    yield
    batch_storage.cache_clear()
