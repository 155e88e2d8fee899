"""multipart/form-data read in memory, within limits, as it streams in.

Why not FastAPI's `UploadFile`: Starlette spools files over 1 MiB to a temporary file on disk, and this service
never writes an upload to disk. Here a file is kept in memory up to `max_file_bytes` (beyond, its bytes are dropped
and it is marked too large), and the whole body is cut off at `max_request_bytes` with 413.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from qface.serve.errors import ApiError, bad_field, megabytes, too_large

MAX_FIELD_BYTES = 1024  # a text field (tasks, detector, attention) is short
MAX_TEXT_FIELDS = 16


@dataclass
class Upload:
    name: str  # the form field
    filename: str
    size: int = 0
    data: bytearray = field(default_factory=bytearray, repr=False)  # emptied when size exceeds the limit


@dataclass
class Form:
    fields: dict[str, str]
    files: list[Upload]


class _Collector:
    """python-multipart callbacks → text fields and file uploads, enforcing the per-part limits."""

    def __init__(self, max_file_bytes: int, max_files: int):
        self.max_file_bytes, self.max_files = max_file_bytes, max_files
        self.fields: dict[str, str] = {}
        self.files: list[Upload] = []
        self.ended = False
        self._header_name = self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._file: Upload | None = None  # the part being read when it is a file, else a text field:
        self._text_name, self._text = "", bytearray()

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._add("_header_name", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_header_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _add(self, name: str, chunk: bytes) -> None:
        setattr(self, name, getattr(self, name) + chunk)

    def _part_begin(self) -> None:
        self._headers, self._file, self._text = {}, None, bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_name.strip().lower()] = self._header_value.strip()
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if not name:
            raise bad_field("a form part has no name (Content-Disposition: form-data; name=...)")
        if b"filename" in options:
            if len(self.files) == self.max_files:
                raise too_large(f"more than {self.max_files} files in one request (the limit per batch)")
            self._file = Upload(name, options[b"filename"].decode("utf-8", "replace"))
            self.files.append(self._file)
        elif name in self.fields:
            raise bad_field(f"the field {name!r} is given twice")
        elif len(self.fields) == MAX_TEXT_FIELDS:
            raise bad_field(f"more than {MAX_TEXT_FIELDS} text fields")
        else:
            self._text_name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        file = self._file
        if file is None:
            self._text += data[start:end]
            if len(self._text) > MAX_FIELD_BYTES:
                raise bad_field(f"the field {self._text_name!r} is longer than {MAX_FIELD_BYTES} bytes")
            return
        file.size += end - start
        if file.size <= self.max_file_bytes:
            file.data += data[start:end]
        else:
            file.data = bytearray()  # too large: keep counting, keep nothing

    def _part_end(self) -> None:
        if self._file is None:
            try:
                self.fields[self._text_name] = self._text.decode("utf-8")
            except UnicodeDecodeError:
                raise bad_field(f"the field {self._text_name!r} is not UTF-8 text") from None
            self._text_name = ""

    def _end(self) -> None:
        self.ended = True


async def read_form(request: Request, max_file_bytes: int, max_files: int, max_request_bytes: int) -> Form:
    """The request's form, or ApiError: 415 not multipart, 413 over a size limit, 422 a bad part, 400 malformed."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send the image(s) as multipart/form-data")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_request_bytes:
        raise too_large(f"the request body ({megabytes(int(declared))}) is over {megabytes(max_request_bytes)}")
    collector = _Collector(max_file_bytes, max_files)
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_request_bytes:
                raise too_large(f"the request body is over {megabytes(max_request_bytes)}")
            parser.write(chunk)
        parser.finalize()
    except (ParseError, ValueError) as error:
        raise ApiError(400, "bad_request", f"malformed multipart/form-data ({error})") from None
    if not collector.ended:
        raise ApiError(400, "bad_request", "the multipart/form-data body ends before its closing boundary")
    return Form(collector.fields, collector.files)
