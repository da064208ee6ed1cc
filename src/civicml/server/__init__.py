"""The REST API server: ``create_app(settings)`` builds it, ``civicml server`` runs it."""

from civicml.server.app import create_app, serve

__all__ = ["create_app", "serve"]
