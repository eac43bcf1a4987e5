"""The livefile upload SDK: bytes, files, streams and live files, with the reference at once.

``AsyncUploadClient`` is the implementation; ``UploadClient`` is its blocking facade over the
same core. Errors are those of ``livefile.api.errors`` (plus ``TranscodingError`` for text in
a declared charset that is not valid in it).
"""

from livefile.client_upload.client import AsyncUploadClient, ReferenceCallback, guess_mime_type
from livefile.client_upload.live_file import EndSignal, Rotation, RotationCallback
from livefile.client_upload.sync import Upload, UploadClient
from livefile.client_upload.upload import AsyncUpload, Progress, UploadResult
from livefile.impl_common.transcoding import TranscodingError

__all__ = [
    "AsyncUpload",
    "AsyncUploadClient",
    "EndSignal",
    "Progress",
    "ReferenceCallback",
    "Rotation",
    "RotationCallback",
    "TranscodingError",
    "Upload",
    "UploadClient",
    "UploadResult",
    "guess_mime_type",
]
