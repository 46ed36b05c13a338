"""Domain exceptions; the API maps each to a status with a message a person can act on."""


class GridwatchError(Exception):
    """Base of every error gridwatch raises on purpose."""


class ConfigError(GridwatchError):
    """Settings or a configuration file are wrong."""


class RegistryError(GridwatchError):
    """A registry file is invalid; the message names the line."""


class NotFoundError(GridwatchError):
    """An object does not exist or is outside the caller's scope."""


class ConflictError(GridwatchError):
    """The request contradicts the object's current state."""


class AuthError(GridwatchError):
    """Missing, unknown, expired or revoked credentials."""


class BrokerAuthError(GridwatchError):
    """The MQTT broker refused our credentials; retrying will not help."""
