"""The bundled Kafka-compatible broker (Tansu) for `touchflow dev` and the integration tests."""

from service.tools.embedded.broker import BrokerError, EmbeddedBroker, free_port

__all__ = ["BrokerError", "EmbeddedBroker", "free_port"]
