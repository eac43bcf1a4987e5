"""ZIP bundles of many resources: the fixed layout of finished members (``layout.py``), where a
bundle's form is kept (``store.py``) and the reader that composes its bytes (``reader.py``); the
job that makes a bundle is ``bundle_job.py``."""
