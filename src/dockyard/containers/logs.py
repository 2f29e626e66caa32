"""The json-file log driver's format: one JSON object per line, as dockerd writes it.

``{"log":"<text>\\n","stream":"stdout|stderr","time":"<RFC3339Nano UTC>"}``; the copier cuts
output into lines (keeping the newline), and splits lines longer than 16 KiB into partial
messages where only the last part ends with ``\\n``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

from dockyard.gojson import format_rfc3339nano, go_string

MAX_LINE = 16 * 1024


class JsonFileWriter:
    def __init__(self, path: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
        os.fchmod(fd, 0o640)
        self._fd = fd
        self._partial: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    def _emit(self, stream: str, text: bytes, ts: str) -> None:
        s = text.decode("utf-8", "surrogateescape")
        line = '{"log":%s,"stream":"%s","time":"%s"}\n' % (go_string(s), stream, ts)
        os.write(self._fd, line.encode())

    def write(self, stream: str, data: bytes) -> None:
        ts = format_rfc3339nano(time.time_ns())
        buf = self._partial[stream] + data
        while True:
            i = buf.find(b"\n")
            if i < 0:
                break
            line, buf = buf[: i + 1], buf[i + 1 :]
            while len(line) > MAX_LINE:
                self._emit(stream, line[:MAX_LINE], ts)
                line = line[MAX_LINE:]
            self._emit(stream, line, ts)
        while len(buf) >= MAX_LINE:
            self._emit(stream, buf[:MAX_LINE], ts)
            buf = buf[MAX_LINE:]
        self._partial[stream] = buf

    def close(self) -> None:
        ts = format_rfc3339nano(time.time_ns())
        for stream, rest in self._partial.items():
            if rest:
                self._emit(stream, rest, ts)
        self._partial = {"stdout": b"", "stderr": b""}
        os.close(self._fd)


@dataclass
class LogEntry:
    stream: str
    text: str
    time: str


def read_entries(path: str) -> Iterator[LogEntry]:
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return
    with f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            yield LogEntry(
                str(obj.get("stream", "stdout")), str(obj.get("log", "")), str(obj.get("time", ""))
            )
