"""One error type for everything a request can get wrong, mapped to both transports' codes."""

from __future__ import annotations

from http import HTTPStatus

OK, INTERNAL = "OK", "INTERNAL"
# HTTP status -> canonical gRPC status code name: the one vocabulary metrics record for both
# transports, as TF Serving's own request_count does. Kept as names so REST needs no grpc import.
_CODE_NAMES = {
    HTTPStatus.OK: OK,
    HTTPStatus.BAD_REQUEST: "INVALID_ARGUMENT",
    HTTPStatus.NOT_FOUND: "NOT_FOUND",
    HTTPStatus.METHOD_NOT_ALLOWED: "UNIMPLEMENTED",
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE: "RESOURCE_EXHAUSTED",
    HTTPStatus.SERVICE_UNAVAILABLE: "UNAVAILABLE",
}


class ServingError(Exception):
    """A request the server cannot answer, with the status both transports should report."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def code_name(self) -> str:
        """The gRPC status code name, e.g. "INVALID_ARGUMENT" (INTERNAL for an unmapped status):
        what metrics record on both transports."""
        return _CODE_NAMES.get(self.status, INTERNAL)

    @property
    def grpc_code(self):
        import grpc

        return grpc.StatusCode[self.code_name]


def bad_request(message: str) -> ServingError:
    return ServingError(message, HTTPStatus.BAD_REQUEST)


def not_found(message: str) -> ServingError:
    return ServingError(message, HTTPStatus.NOT_FOUND)

