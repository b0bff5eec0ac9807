"""vibews: a WebSocket hub between AI coding agents and the people who steer them."""

__version__ = "0.1.0"
