"""The filesystem under a URI: a local path, ``file://``, pyarrow's own filesystems (``s3://``, ``gs://``,
``abfs://``, ``hdfs://``: options such as ``?endpoint_override=...`` travel in the URI), or any fsspec
protocol whose package is installed (``memory://``, ``az://``). The results store (sweeps/storage.py) and
token shards (proxy_models/token_files.py) both open their URIs here.

It imports nothing of the project, and pyarrow and fsspec only to open a filesystem: the sweeps layer opens
its store with it too, and `plan` checks a local corpus without them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where a filesystem is opened: `plan` checks local sources without pyarrow
    import pyarrow.fs as pafs

# Filesystems whose single-object writes are atomic and whose renames are copies.
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})
# pyarrow's native filesystems; others go through fsspec.
PYARROW_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})


def is_uri(location: str) -> bool:
    """Whether `location` is a URI (``scheme://...``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def shown(location: str) -> str:
    """`location` as messages and result rows show it: a URI without its credentials and its query (either
    may hold a secret: `s3://KEY:SECRET@bucket/...?secret_key=...`)."""
    if not is_uri(location):
        return location
    scheme, rest = location.split("://", 1)
    authority, slash, path = rest.partition("?")[0].partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def resolve(uri: str, *, what: str, error: type[Exception]) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of ``uri``; pyarrow's own filesystems first, then fsspec. A URI that cannot be
    opened raises ``error`` with one line naming it as ``what`` (e.g. "storage URI") and the fix."""
    import fsspec
    import pyarrow as pa
    import pyarrow.fs as pafs

    if not isinstance(uri, str) or not uri.strip():
        raise error(f"{what} {uri!r}: must be a local path or a URI such as s3://bucket/prefix")
    if not is_uri(uri):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)).replace(os.sep, "/")
    scheme = uri.split("://", 1)[0].lower()
    if scheme in PYARROW_SCHEMES:
        try:
            filesystem, path = pafs.FileSystem.from_uri(uri)
            return filesystem, path.rstrip("/") or "/"
        except (ImportError, pa.ArrowNotImplementedError):
            pass  # this pyarrow build lacks the filesystem: fsspec may have it
        except (OSError, ValueError) as exc:
            raise error(
                f"{what} {uri!r}: cannot open it ({exc}): check the bucket, endpoint and credentials"
            ) from None
    try:
        filesystem, path = fsspec.core.url_to_fs(uri)
    except ImportError as exc:
        raise error(f"{what} {shown(uri)!r}: scheme {scheme!r} needs a package: {exc}") from None
    except ValueError as exc:
        fix = "use a local path, file://, s3://, gs:// or an installed fsspec protocol"
        raise error(f"{what} {shown(uri)!r}: unknown scheme {scheme!r} ({exc}): {fix}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path.rstrip("/") or "/"


def is_object_store(filesystem: pafs.FileSystem) -> bool:
    """Whether ``filesystem`` is an object store (S3, GCS, Azure...)."""
    import pyarrow.fs as pafs

    if isinstance(filesystem, pafs.PyFileSystem):
        protocol = filesystem.handler.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
    else:
        protocols = {filesystem.type_name}
    return bool(protocols & OBJECT_STORES)
