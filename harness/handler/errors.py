"""Client-facing errors of the handler: each has a stable code, an HTTP status and a clear message."""

from __future__ import annotations


class HandlerError(Exception):
    """An error answered to the client as JSON `{"error": {"code", "message"}}`; never a crash."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, *, close: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        # The connection is closed after the answer: its client misbehaved, or its body was not read.
        self.close = close

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def empty_body() -> HandlerError:
    return HandlerError(400, "empty_body", "the request body is empty: send the image bytes as the body")


def unsupported_media_type(content_type: str | None, supported: tuple[str, ...]) -> HandlerError:
    shown = f"'{content_type}'" if content_type else "missing"
    return HandlerError(
        415,
        "unsupported_media_type",
        f"Content-Type {shown} is not supported; send one of: {', '.join(supported)}",
    )


def invalid_image(detail: str) -> HandlerError:
    return HandlerError(400, "invalid_image", f"the body is not a valid image: {detail}")


def image_too_large(width: int, height: int, max_pixels: int) -> HandlerError:
    return HandlerError(
        422,
        "image_too_large",
        f"the image declares {width}x{height} = {width * height} pixels, over the limit of {max_pixels}",
    )


def body_too_large(limit: int) -> HandlerError:
    return HandlerError(
        413, "body_too_large", f"the request body is larger than the limit of {limit} bytes", close=True
    )


def request_timeout(detail: str) -> HandlerError:
    return HandlerError(408, "request_timeout", f"the request body {detail}", close=True)


def bodies_over_budget(budget: int) -> HandlerError:
    return HandlerError(
        503,
        "overloaded",
        f"the handler holds {budget} bytes of request bodies already (its body budget); retry later",
        headers={"Retry-After": "1"},
        close=True,
    )


def too_many_connections(limit: int) -> HandlerError:
    return HandlerError(
        503,
        "too_many_connections",
        f"the handler has more than {limit} open connections; close idle ones or retry later",
        headers={"Retry-After": "1"},
        close=True,
    )


def invalid_query(detail: str) -> HandlerError:
    return HandlerError(400, "invalid_query", f"invalid query parameter: {detail}")


def overloaded(retry_after_s: int) -> HandlerError:
    return HandlerError(
        503,
        "overloaded",
        "the handler is at its concurrency and queue limits; retry later",
        headers={"Retry-After": str(retry_after_s)},
    )


def model_unavailable(retry_after_s: int) -> HandlerError:
    # Generic on purpose: the model's source may be a URL holding credentials or a signed query string,
    # and the reason may name it. The handler's log says what failed (with the URL redacted).
    return HandlerError(
        503,
        "model_unavailable",
        "the model could not be loaded; the handler's log says why",
        headers={"Retry-After": str(retry_after_s)},
    )


def draining() -> HandlerError:
    return HandlerError(
        503, "draining", "the handler is shutting down; retry on another instance", headers={"Retry-After": "1"}
    )
