"""Where the Batch API's bytes live: Django's storage API, a local folder by default."""

from functools import cache

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage


@cache
def batch_storage() -> Storage:
    return FileSystemStorage(location=settings.BATCH_FILES_DIR)
