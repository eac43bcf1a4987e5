"""The livefile upload SDK: bytes, files, streams and live files, with the reference at once.

``AsyncUploadClient`` is the implementation; ``UploadClient`` is its blocking facade.
"""

from livefile.client_upload.client import AsyncUploadClient
from livefile.client_upload.sync import Upload, UploadClient
from livefile.client_upload.upload import AsyncUpload, UploadResult
from livefile.impl_common.transcoding import TranscodingError

__all__ = [
    "AsyncUpload",
    "AsyncUploadClient",
    "TranscodingError",
    "Upload",
    "UploadClient",
    "UploadResult",
]
