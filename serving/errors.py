"""One error type for everything a request can get wrong, mapped to both transports' codes."""

from __future__ import annotations

from http import HTTPStatus


class ServingError(Exception):
    """A request the server cannot answer, with the status both transports should report."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.message = message
        self.status = status

    @property
    def grpc_code(self):
        import grpc

        return {
            HTTPStatus.BAD_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
            HTTPStatus.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
            HTTPStatus.SERVICE_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
        }.get(self.status, grpc.StatusCode.INTERNAL)


def bad_request(message: str) -> ServingError:
    return ServingError(message, HTTPStatus.BAD_REQUEST)


def not_found(message: str) -> ServingError:
    return ServingError(message, HTTPStatus.NOT_FOUND)
