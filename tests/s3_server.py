"""A real S3-compatible server on loopback for tests and benchmarks: moto's server mode, counting requests.

The store reaches it with nothing but its URI: the dummy credentials, the endpoint and the region all travel
in ``s3://KEY:SECRET@bucket/prefix?endpoint_override=127.0.0.1:PORT&scheme=http&region=us-east-1``, so no
environment variable is set and a subprocess given the URI reaches the same server. Credentials in the URI
also keep the AWS SDK off its credential chain, whose last step asks the EC2 metadata address
(169.254.169.254): only loopback is ever contacted.

Example (the ``s3_server`` fixture of tests/conftest.py yields a started ``S3Server``)::

    with S3Server() as server:
        store = ResultStore(server.bucket())  # a fresh bucket, and the store's URI under it
        with server.requests() as counted:
            store.write(rows, sweep_id="s", name="a")
        counted.total, counted.by_method["PUT"], counted.by_kind["UploadPart"]

A benchmark script outside pytest imports it after ``sys.path.insert(0, "<repository>/tests")``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import parse_qs, urlencode

import pyarrow as pa
import pyarrow.fs as pafs
from moto.server import ThreadedMotoServer

ACCESS_KEY = SECRET_KEY = "testing"  # moto accepts any; given so the SDK never looks for real ones
REGION = "us-east-1"


@dataclasses.dataclass(frozen=True)
class Request:
    """One HTTP request the server answered."""

    method: str  # GET, HEAD, PUT, POST, DELETE
    path: str  # /bucket/key, path-style (pyarrow with an endpoint_override sends no virtual-host names)
    query: str  # the raw query string, e.g. "uploadId=...&partNumber=1"
    kind: str  # the S3 operation: PutObject, UploadPart, ListObjectsV2, ... (s3_operation)
    status: int  # the HTTP status of the answer
    range: str | None = None  # a ranged GET's Range header, e.g. "bytes=0-4095"


class Counted:
    """The requests answered between entering and leaving ``S3Server.requests()``: live inside the block,
    fixed once it ends."""

    def __init__(self, snapshot: Callable[[], list[Request]]):
        self._snapshot = snapshot
        self._frozen: list[Request] | None = None

    def _freeze(self) -> None:
        self._frozen = self._snapshot()

    @property
    def requests(self) -> list[Request]:
        return list(self._frozen if self._frozen is not None else self._snapshot())

    @property
    def total(self) -> int:
        return len(self.requests)

    @property
    def by_kind(self) -> collections.Counter[str]:
        """How many of each S3 operation, e.g. ``Counter({"HeadObject": 2, "GetObject": 1})``."""
        return collections.Counter(r.kind for r in self.requests)

    @property
    def by_method(self) -> collections.Counter[str]:
        """How many of each HTTP method, e.g. ``Counter({"GET": 1, "HEAD": 2})``."""
        return collections.Counter(r.method for r in self.requests)

    def __repr__(self) -> str:
        return f"Counted({self.total}: {dict(self.by_kind)})"


class _RequestLog:
    """WSGI middleware that notes every request it passes to ``app``, before the answer leaves the server: a
    client that got its answer finds its request counted."""

    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._requests: list[Request] = []

    def __call__(self, environ, start_response):
        statuses = []

        def noting_status(status, headers, exc_info=None):
            statuses.append(int(status.split()[0]))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, noting_status)
        finally:  # an app that raised is answered 500 by werkzeug
            method, path, query = environ["REQUEST_METHOD"], environ["PATH_INFO"], environ["QUERY_STRING"]
            copy = bool(environ.get("HTTP_X_AMZ_COPY_SOURCE"))
            kind = s3_operation(method, path, query, copy=copy)
            with self._lock:
                status = statuses[-1] if statuses else 500
                self._requests.append(Request(method, path, query, kind, status, environ.get("HTTP_RANGE")))

    def since(self, start: int) -> list[Request]:
        with self._lock:
            return self._requests[start:]

    def __len__(self) -> int:
        with self._lock:
            return len(self._requests)


def s3_operation(method: str, path: str, query: str, *, copy: bool = False) -> str:
    """The S3 API operation of a path-style request, e.g. ("PUT", "/b/k", "partNumber=1&uploadId=x") ->
    "UploadPart"; "<METHOD> <bucket|object>" for one it does not name."""
    if path.startswith("/moto-api/"):
        return "moto-api"
    bucket, _, key = path.lstrip("/").partition("/")
    params = parse_qs(query, keep_blank_values=True)
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} service"
    if not key:
        if method == "GET":
            if "location" in params:
                return "GetBucketLocation"
            if "uploads" in params:
                return "ListMultipartUploads"
            return "ListObjectsV2" if params.get("list-type") == ["2"] else "ListObjects"
        plain = {"HEAD": "HeadBucket", "PUT": "CreateBucket", "DELETE": "DeleteBucket"}
        if method in plain and not params:
            return plain[method]
        return "DeleteObjects" if method == "POST" and "delete" in params else f"{method} bucket"
    upload = "uploadId" in params
    if method == "PUT":
        if upload:
            return "UploadPartCopy" if copy else "UploadPart"
        return "CopyObject" if copy else "PutObject"
    if method == "POST":
        if "uploads" in params:
            return "CreateMultipartUpload"
        return "CompleteMultipartUpload" if upload else f"{method} object"
    if method == "DELETE":
        return "AbortMultipartUpload" if upload else "DeleteObject"
    return {"GET": "GetObject", "HEAD": "HeadObject"}.get(method, f"{method} object")


class S3Server:
    """moto's S3 server on 127.0.0.1 (a free port), in a thread of this process, counting its requests.

    Buckets live in moto's in-process state until the process ends; each test takes its own from ``bucket``.
    """

    def __init__(self):
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._log: _RequestLog | None = None
        self.endpoint = ""  # "127.0.0.1:PORT" once started

    def start(self) -> S3Server:
        try:
            pafs.ensure_s3_initialized()
        except pa.ArrowInvalid as error:  # pyarrow.fs.finalize_s3() ran: S3 is gone for this process
            raise RuntimeError(
                f"pyarrow cannot use S3 again in this process ({error}): something called "
                "pyarrow.fs.finalize_s3() before; leave that to pyarrow's exit hook"
            ) from None
        # One line per request on stderr otherwise (werkzeug's dev server); the counter is the record here.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto.start()
        wsgi_server = self._moto._server  # werkzeug's server, which calls `.app` for each request
        self._log = _RequestLog(wsgi_server.app)
        wsgi_server.app = self._log  # before anyone knows the port: no request goes uncounted
        host, port = self._moto.get_host_and_port()
        self.endpoint = f"{host}:{port}"
        return self

    def stop(self) -> None:
        self._moto.stop()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def uri(self, bucket: str, prefix: str = "store", **params: str) -> str:
        """The URI of ``bucket/prefix`` on this server, for ``ResultStore`` or
        ``pyarrow.fs.FileSystem.from_uri`` (``params``: more of pyarrow's S3 URI parameters, e.g.
        ``allow_bucket_creation="true"``)."""
        query = urlencode(
            {"endpoint_override": self.endpoint, "scheme": "http", "region": REGION, **params}, safe=":"
        )
        return f"s3://{ACCESS_KEY}:{SECRET_KEY}@{bucket}/{prefix.strip('/')}?{query}"

    def bucket(self, name: str | None = None, prefix: str = "store") -> str:
        """Create a new, empty bucket (a unique name unless ``name`` is given) and return the URI of
        ``prefix`` in it; ValueError if a bucket of that name exists already."""
        name = name or f"test-{uuid.uuid4().hex[:20]}"
        filesystem, _ = pafs.FileSystem.from_uri(self.uri(name, allow_bucket_creation="true"))
        if filesystem.get_file_info(name).type != pafs.FileType.NotFound:
            raise ValueError(f"bucket {name!r} exists already on {self.endpoint}: take another name")
        filesystem.create_dir(name)
        return self.uri(name, prefix)

    @contextlib.contextmanager
    def requests(self) -> Iterator[Counted]:
        """Count the requests the server answers inside the block (every client's, this process's or not)."""
        log = self._log
        assert log is not None, "start the server first"
        start = len(log)
        counted = Counted(lambda: log.since(start))
        try:
            yield counted
        finally:
            counted._freeze()
