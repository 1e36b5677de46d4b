"""Where a source lives: local paths, URLs, cloud buckets and GDAL ``/vsi*/`` paths.

One place decides what a path string means, so every command treats ``http(s)://``,
``s3://``, ``gs://``, ``az://`` and ``/vsi*/`` inputs the same way (never as a local path):

- :func:`is_remote` / :func:`to_gdal_path`: the GDAL name of a location (``s3://b/k`` ->
  ``/vsis3/b/k``, ``https://h/f.tif`` -> ``/vsicurl/https://h/f.tif``);
- :func:`redact`: a location safe to print or store (no ``user:pass@``, no signature or token
  values in the query string). Credentials come from the usual environment (``AWS_*``,
  ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, GDAL options) and are never written;
- :func:`remote_env`: GDAL configured for remote reads, scoped in a :class:`rasterio.Env`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = [
    "REMOTE_GDAL_OPTIONS",
    "expand_remote",
    "is_remote",
    "is_url",
    "join_location",
    "local_copy",
    "location_exists",
    "location_path",
    "location_suffix",
    "read_bytes",
    "redact",
    "redact_text",
    "remote_env",
    "remote_hint",
    "to_gdal_path",
]

#: URL schemes read remotely, and the GDAL virtual file system each maps to.
_VSI = {"http": "/vsicurl/", "https": "/vsicurl/", "s3": "/vsis3/", "gs": "/vsigs/",
        "az": "/vsiaz/", "azure": "/vsiaz/"}  # fmt: skip

#: GDAL options for remote reads (set only where the user's environment does not set them).
#: - no directory listing or side-car probing on open (.aux.xml, .ovr, .msk: one request each);
#: - the first 64 KiB read at open, so a COG header and its tile index cost one request;
#: - consecutive byte ranges merged into one request, and a per-file block cache;
#: - a few retries with back-off for transient 5xx/429 answers.
REMOTE_GDAL_OPTIONS: dict[str, str] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_INGESTED_BYTES_AT_OPEN": "65536",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 1024 * 1024),
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
}

_SECRET_KEYS = re.compile(
    r"(sig|signature|token|credential|secret|password|passwd|key|auth|sv|se|sp|st)$", re.I
)


def is_url(location: str) -> bool:
    """Whether ``location`` is a URL of a scheme gigaseg reads remotely."""
    scheme = urlsplit(location).scheme.lower()
    return scheme in _VSI and "://" in location


def is_remote(location: Any) -> bool:
    """Whether ``location`` is a URL or a GDAL virtual path (``/vsicurl/``, ``/vsis3/`` ...)."""
    text = str(location)
    return is_url(text) or text.startswith("/vsi")


def to_gdal_path(location: str) -> str:
    """Return the name GDAL opens for ``location`` (local paths and ``/vsi*/`` paths unchanged)."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _VSI[scheme] + location
    return _VSI[scheme] + parts.netloc + parts.path


def redact(location: Any) -> str:
    """``location`` without credentials: ``user:pass@`` and secret query values removed.

    >>> redact("https://me:pw@h.org/a.tif?X-Amz-Signature=abc&x=1")
    'https://h.org/a.tif?X-Amz-Signature=REDACTED&x=1'
    """
    text = str(location)
    prefix = ""
    if text.startswith("/vsicurl/"):
        prefix, text = "/vsicurl/", text[len("/vsicurl/") :]
    if "://" not in text:
        return prefix + text
    parts = urlsplit(text)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "REDACTED" if _SECRET_KEYS.search(k.replace("-", "_")) else v) for k, v in pairs],
            safe="/:",
        )
    return prefix + urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


_URL_IN_TEXT = re.compile(r"(?:/vsicurl/)?(?:https?|s3|gs|az|azure)://[^\s'\"()<>]+")


_PARAM_IN_TEXT = re.compile(r"([?&])([\w.-]+)=([^&\s'\"()<>,;]*)")


def redact_text(text: str) -> str:
    """Every URL inside ``text`` (a GDAL or HTTP error message) passed through :func:`redact`.

    Secret query values are removed wherever they appear, also after a bare file name: GDAL
    names a dataset by its base name, query string included (``scene.tif?X-Amz-Signature=...``).
    """
    text = _URL_IN_TEXT.sub(lambda match: redact(match.group(0)), text)

    def _param(match: re.Match[str]) -> str:
        mark, key, value = match.groups()
        secret = _SECRET_KEYS.search(key.replace("-", "_"))
        return f"{mark}{key}={'REDACTED' if secret else value}"

    return _PARAM_IN_TEXT.sub(_param, text)


#: What to do about a remote read GDAL refused, by a fragment of GDAL's message.
_HINTS = (
    (
        "Range downloading not supported",
        "the server does not answer HTTP Range requests; serve the file from one that does "
        "(nginx, Apache, S3, a CDN) or download it first",
    ),
    (
        "HTTP response code: 401",
        "the server asks for credentials; put user:password@ in the URL or set GDAL_HTTP_AUTH "
        "/ GDAL_HTTP_USERPWD / GDAL_HTTP_HEADERS",
    ),
    (
        "HTTP response code: 403",
        "access denied; check the credentials (AWS_*, GDAL_HTTP_*) and whether a signed URL "
        "has expired (a server that refuses HEAD requests: set CPL_VSIL_CURL_USE_HEAD=NO)",
    ),
    ("HTTP response code: 404", "no file there; check the URL"),
    ("specified key does not exist", "no such key in the bucket; check the path"),
    ("specified bucket does not exist", "no such bucket; check the bucket name (and endpoint)"),
    ("Could not connect", "nothing answers there; check the host and port"),
    ("Could not resolve host", "unknown host; check the URL"),
)


def remote_hint(message: str) -> str:
    """Return what to do about a failed remote read, from GDAL's message (``""`` if unknown).

    >>> remote_hint("Range downloading not supported by this server!")[:36]
    'the server does not answer HTTP Rang'
    """
    return next((hint for fragment, hint in _HINTS if fragment in message), "")


def location_path(location: Any) -> PurePosixPath:
    """Return the path of the file a location names.

    A URL's path (``/vsicurl/`` dropped, query ignored), or the path itself (local,
    ``/vsis3/bucket/key``...).

    >>> location_path("/vsicurl/https://h:80/a/b.tif?sig=1")
    PurePosixPath('/a/b.tif')
    """
    text = str(location)
    if text.startswith("/vsicurl/") and "://" in text:
        text = text[len("/vsicurl/") :]
    if is_url(text):
        return PurePosixPath(urlsplit(text).path or "/")
    return PurePosixPath(text)


def location_suffix(location: Any) -> str:
    """Lower-case suffix of the file a location names (query strings ignored)."""
    text = str(location)
    if is_url(text):
        text = urlsplit(text).path
    return PurePosixPath(text.rstrip("/")).suffix.lower()


def location_exists(location: Any) -> bool:
    """Local paths: whether they exist. Remote locations: True (the reader finds out)."""
    return is_remote(location) or Path(str(location)).exists()


def join_location(base: str, href: str) -> str:
    """Resolve ``href`` (absolute, or relative to the file ``base``), as STAC asks for."""
    if is_remote(href) or "://" in href:
        return href
    if is_url(base):  # RFC 3986: "B04.tif", "../data/B04.tif", "/data/B04.tif?sig=..."
        parts = urlsplit(base)
        path, _, query = href.partition("?")
        if not path.startswith("/"):
            path = str(PurePosixPath(parts.path).parent / path)
        path = os.path.normpath(path)
        return urlunsplit((parts.scheme, parts.netloc, path, query, ""))
    if href.startswith("/"):
        return href
    return os.path.normpath(str(Path(base).parent / href))


def read_bytes(location: str) -> bytes:
    """Read a small whole file (a STAC item) from a local path, URL or bucket, through GDAL.

    Raises
    ------
    pipeline.errors.InputError
        The file cannot be read; the message names it without credentials.
    """
    from pipeline.errors import InputError

    if not is_remote(location):
        try:
            return Path(location).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {location} ({exc.strerror}); check the path") from None
    text = location[len("/vsicurl/") :] if location.startswith("/vsicurl/") else location
    scheme = urlsplit(text).scheme.lower()
    try:
        if scheme in ("http", "https"):
            import urllib.request

            url, headers = _http_request(text)
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=60) as answer:
                data: bytes = answer.read()
                return data
        if scheme == "s3" or text.startswith("/vsis3/"):
            return _read_s3(text)
    except InputError:
        raise
    except Exception as exc:
        code = getattr(exc, "code", None)
        if isinstance(code, int):  # urllib's HTTPError: said the way GDAL says it
            exc.close()  # type: ignore[attr-defined]
            reason = f"HTTP response code: {code}"
        else:
            reason = redact_text(" ".join(str(exc).split()))
        hint = remote_hint(reason)
        raise InputError(
            f"cannot read {redact(location)} ({reason})" + (f": {hint}" if hint else "")
        ) from None
    raise InputError(
        f"cannot read {redact(location)} as a small file: only local paths, http(s):// and "
        "s3:// are supported here; give an https URL"
    )


def _http_request(url: str) -> tuple[str, dict[str, str]]:
    """Return ``url`` without ``user:pass@`` and the headers GDAL would send for it.

    Credentials come as GDAL takes them for rasters: ``user:pass@`` in the URL or
    ``GDAL_HTTP_USERPWD`` (basic auth), and ``GDAL_HTTP_HEADERS`` (``"Name: value"`` pairs,
    comma- or line-separated), so a STAC item or outline file behind the same server as its
    images opens with the same settings.
    """
    import base64
    from urllib.parse import unquote

    parts = urlsplit(url)
    headers: dict[str, str] = {}
    userinfo = ""
    if "@" in parts.netloc:
        userinfo, netloc = parts.netloc.rsplit("@", 1)
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        userinfo = unquote(userinfo)
    userinfo = userinfo or os.environ.get("GDAL_HTTP_USERPWD", "")
    if userinfo:
        headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
    for line in re.split(r"[\r\n]+|,(?=\s*[\w-]+:)", os.environ.get("GDAL_HTTP_HEADERS", "")):
        name, sep, value = line.partition(":")
        if sep and name.strip():
            headers[name.strip()] = value.strip()
    return url, headers


def _read_s3(location: str) -> bytes:
    """Read ``s3://bucket/key`` (or ``/vsis3/bucket/key``) with boto3 and GDAL's S3 settings."""
    rest = location[len("/vsis3/") :] if location.startswith("/vsis3/") else location[5:]
    bucket, _, key = rest.partition("/")
    body: bytes = _s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


@contextmanager
def local_copy(location: str | Path) -> Iterator[Path]:
    """Yield a local path holding the file at ``location`` (a small file: outlines, labels).

    Local paths are yielded as they are; a remote file is fetched with :func:`read_bytes` into
    a temporary folder, under its own file name, removed afterwards.

    Raises
    ------
    pipeline.errors.InputError
        The remote file cannot be read; the message names it without credentials.
    """
    if not is_remote(location):
        yield Path(location)
        return
    import tempfile

    name = PurePosixPath(_path_part(str(location))).name or "download"
    data = read_bytes(str(location))
    with tempfile.TemporaryDirectory(prefix="gigaseg-") as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        yield path


_GLOB = set("*?[")


def expand_remote(pattern: str) -> list[str]:
    """Expand an ``s3://bucket/prefix/*.tif`` glob by listing the bucket (boto3).

    Other remote locations (and s3 ones without a glob) are returned as they are: HTTP has
    no listing, and GDAL finds out whether the file exists when it opens it.

    Raises
    ------
    pipeline.errors.InputError
        The bucket cannot be listed (no boto3, no access); the message says what to do.
    """
    from pipeline.errors import InputError

    if not (_GLOB & set(_path_part(pattern))):  # a URL's query string is not a glob
        return [pattern]
    text = pattern[len("/vsis3/") :] if pattern.startswith("/vsis3/") else pattern
    if not text.startswith("s3://") and not pattern.startswith("/vsis3/"):
        raise InputError(
            f"cannot expand the glob in {redact(pattern)}: only s3:// prefixes can be listed; "
            "list the files one by one"
        )
    rest = text[5:] if text.startswith("s3://") else text
    bucket, _, key_pattern = rest.partition("/")
    prefix = key_pattern[: min(key_pattern.index(c) for c in _GLOB if c in key_pattern)]
    try:
        client = _s3_client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    except InputError:
        raise
    except Exception as exc:
        reason = redact_text(" ".join(str(exc).split()))
        raise InputError(f"cannot list s3://{bucket}/{prefix} ({reason})") from None
    scheme = "/vsis3/" if pattern.startswith("/vsis3/") else "s3://"
    matcher = _key_glob(key_pattern)
    matched = [key for key in sorted(keys) if matcher.fullmatch(key)]
    return [f"{scheme}{bucket}/{key}" for key in matched]


def _key_glob(pattern: str) -> re.Pattern[str]:
    """Compile a bucket-key glob with the local ``glob`` rules.

    ``*``, ``?`` and ``[...]`` stay within one folder (``scenes/*.tif`` does not match
    ``scenes/old/x.tif``); ``**/`` spans any number of folders, ``**`` anything.
    """
    import fnmatch

    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            # fnmatch translates a class exactly ("[!a]" -> "[^a]"); strip its anchors
            out.append(fnmatch.translate(pattern[i : end + 1])[4:-3])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _path_part(location: str) -> str:
    """Return the path of a URL (``/vsicurl/`` dropped, query and fragment ignored).

    ``/vsi*/`` paths other than ``/vsicurl/https://...`` are returned as they are.
    """
    text = location[len("/vsicurl/") :] if location.startswith("/vsicurl/") else location
    if "://" in text:
        parts = urlsplit(text)
        return parts.netloc + parts.path
    return location


def _s3_client() -> Any:
    """Return a boto3 S3 client set up from the environment GDAL reads.

    ``AWS_S3_ENDPOINT`` + ``AWS_HTTPS`` (MinIO-like servers), ``AWS_REGION``, and
    ``AWS_NO_SIGN_REQUEST=YES`` for public buckets (no credentials needed or sent).
    """
    from pipeline.errors import InputError

    try:
        import boto3
    except ImportError:
        raise InputError("listing or fetching from s3:// needs boto3 (pip install boto3)") from None
    endpoint = os.environ.get("AWS_S3_ENDPOINT")
    url = None
    if endpoint:
        secure = os.environ.get("AWS_HTTPS", "YES").upper() not in ("NO", "FALSE", "OFF", "0")
        url = endpoint if "://" in endpoint else ("https://" if secure else "http://") + endpoint
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    config = None
    if os.environ.get("AWS_NO_SIGN_REQUEST", "NO").upper() in ("YES", "TRUE", "ON", "1"):
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(signature_version=UNSIGNED)  # a public bucket, as GDAL reads it
    return boto3.client("s3", endpoint_url=url, region_name=region, config=config)


@contextmanager
def remote_env(location: Any) -> Iterator[None]:
    """Scope :data:`REMOTE_GDAL_OPTIONS` around a remote read (a no-op for local files).

    Options the user set in the environment win, so ``GDAL_HTTP_*`` or
    ``AWS_S3_ENDPOINT`` tuning still applies.
    """
    if not is_remote(location):
        with nullcontext():
            yield
        return
    import rasterio

    options = {k: v for k, v in REMOTE_GDAL_OPTIONS.items() if k not in os.environ}
    with rasterio.Env(**options):
        yield
