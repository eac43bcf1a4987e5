"""The livefile download SDK: watch a resource, read ranges and lines, follow it to its end.

``AsyncDownloadClient`` is the implementation; ``DownloadClient`` is its blocking facade.
"""

from livefile.client_download.client import AsyncDownloadClient
from livefile.client_download.resources import (
    adelete_resource,
    alist_resources,
    delete_resource,
    list_resources,
)
from livefile.client_download.sync import DownloadClient
from livefile.impl_common.download_protocol import LinesPage

__all__ = [
    "AsyncDownloadClient",
    "DownloadClient",
    "LinesPage",
    "adelete_resource",
    "alist_resources",
    "delete_resource",
    "list_resources",
]
