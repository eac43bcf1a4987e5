"""The livefile download SDK: watch a resource, read ranges and lines, follow it to its end.

``AsyncDownloadClient`` is the implementation; ``DownloadClient`` is its blocking facade.
"""

from livefile.client_download.client import AsyncDownloadClient
from livefile.client_download.sync import DownloadClient
from livefile.impl_common.download_protocol import LinesPage

__all__ = ["AsyncDownloadClient", "DownloadClient", "LinesPage"]
