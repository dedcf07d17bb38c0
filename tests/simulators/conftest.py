"""The integration fixtures (a real gateway on 127.0.0.1, port 0), shared with tests/integration."""

from tests.integration.conftest import gateway_process, start_gateway  # noqa: F401
