"""The one small interface every weight-sync transport implements, plus the HTTP and bucketing helpers
they share. A transport moves HF-named tensors into running SGLang servers (or `spice serve`
stand-ins) without restarting them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Protocol

import requests
import torch


class WeightSyncError(RuntimeError):
    """A server refused or failed a weight update; the message names the server and the call."""


class WeightSync(Protocol):
    """Moves full, HF-named tensors into every server under a new weight version."""

    name: str

    def push(self, urls: list[str], named_tensors: Iterable[tuple[str, torch.Tensor]], version: int,
             skip: Callable[[str], bool] = lambda url: False) -> int:
        """Send the tensors to every server in `urls` (servers for which `skip(url)` turns true on an
        error are left out: they are being restarted and get resynchronised); return bytes sent."""
        ...

    def reset(self) -> None:
        """Forget per-server state (e.g. a process group) after a server was restarted."""
        ...

    def close(self) -> None:
        """Release what the transport holds (process groups, temporary files)."""
        ...


def headers(api_key: str | None) -> dict[str, str]:
    """SGLang checks `Authorization: Bearer <api key>` when launched with `--api-key`."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def post(url: str, path: str, payload: dict[str, Any] | None, *, api_key: str | None = None,
         timeout: float = 600.0, missing_ok: bool = False) -> dict[str, Any] | None:
    """POST JSON to one server's control endpoint; raise WeightSyncError naming the server and path
    when it is unreachable, answers an error status, or reports `success: false`. With `missing_ok`,
    a 404 (an endpoint this server's release does not have) returns None."""
    try:
        response = requests.post(url.rstrip("/") + path, json=payload or {}, headers=headers(api_key),
                                 timeout=timeout)
    except requests.RequestException as error:
        raise WeightSyncError(f"{url}{path}: request failed: {error}") from error
    if missing_ok and response.status_code == 404:
        return None
    try:
        body = response.json() if response.content else {}
    except ValueError:
        body = {"message": response.text[:500]}
    if response.status_code >= 400 or (isinstance(body, dict) and body.get("success") is False):
        message = body.get("message", body) if isinstance(body, dict) else body
        raise WeightSyncError(f"{url}{path}: HTTP {response.status_code}: {message}")
    return body if isinstance(body, dict) else {"result": body}


def post_all(urls: list[str], path: str, payload: dict[str, Any] | Callable[[int], dict[str, Any]], *,
             api_key: str | None = None, timeout: float = 600.0,
             skip: Callable[[str], bool] = lambda url: False, missing_ok: bool = False
             ) -> list[dict[str, Any] | None]:
    """POST to every server at once (`payload` may depend on the server's index); a failure on a
    server that `skip` says is being restarted is tolerated (its entry is None), any other raises."""
    def one(item: tuple[int, str]) -> dict[str, Any] | None:
        index, url = item
        body = payload(index) if callable(payload) else payload
        try:
            return post(url, path, body, api_key=api_key, timeout=timeout, missing_ok=missing_ok)
        except WeightSyncError:
            if skip(url):
                return None
            raise

    if not urls:
        return []
    if len(urls) == 1:
        return [one((0, urls[0]))]
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        return list(pool.map(one, enumerate(urls)))


@contextmanager
def weight_update_session(urls: list[str], *, api_key: str | None = None, timeout: float = 600.0,
                          skip: Callable[[str], bool] = lambda url: False) -> Iterator[list[str]]:
    """POST `/begin_weight_update` before the first bucket and `/end_weight_update` after the last:
    SGLang 0.5.21+ refuses tensor and distributed updates outside such a session. Servers that answer
    404 (0.5.20 and older) have none. Yields the urls where a session is open; it is closed even when
    the update fails, so the server is left ready for the next one."""
    answers = post_all(urls, "/begin_weight_update", {}, api_key=api_key, timeout=timeout, skip=skip,
                       missing_ok=True)
    opened = [url for url, answer in zip(urls, answers) if answer is not None]
    try:
        yield opened
    except BaseException:
        try:
            post_all(opened, "/end_weight_update", {}, api_key=api_key, timeout=timeout, skip=lambda url: True)
        except WeightSyncError:
            pass  # the update's own error is the one to report
        raise
    post_all(opened, "/end_weight_update", {}, api_key=api_key, timeout=timeout, skip=skip)


def buckets(named_tensors: Iterable[tuple[str, torch.Tensor]],
            bucket_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Group tensors in order into lists of at most `bucket_bytes` (a larger tensor goes alone), so a
    sync never holds more than one bucket of extra memory."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def nbytes(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
    return sum(t.numel() * t.element_size() for _, t in named_tensors)
