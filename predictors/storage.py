"""Resolve ``--model_dir``: a local path, or a storage URI that ``kserve-storage`` resolves."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlparse

from predictors.errors import ConfigError

logger = logging.getLogger("maas")
MODEL_DIR_HINT = "pass --model_dir a directory (or storage URI) holding the model and its maas.yaml"


def resolve_model_dir(uri: str) -> Path:
    """A local directory holding the model; URIs (file://, pvc://, s3://, gs://, hf://, ...) go
    through ``kserve_storage.Storage.download`` when the ``storage`` extra is installed."""
    scheme = urlparse(uri).scheme
    if scheme:
        try:
            from kserve_storage import Storage
        except ImportError:
            if scheme != "file":
                raise ConfigError(f"{uri!r} needs the kserve-storage package: pip install 'maas[storage]'") from None
            path = Path(urlparse(uri).path)
        else:
            logger.info("resolving model storage %s", uri)
            try:
                path = Path(Storage.download(uri))
            except Exception as exc:
                raise ConfigError(f"cannot fetch model from {uri!r}: {exc}") from exc
    else:
        path = Path(uri).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model directory {path} does not exist or is not a directory; {MODEL_DIR_HINT}")
    return path
