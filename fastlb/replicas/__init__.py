"""Where replicas come from: the provider interface and its implementations.

- `base`: the `Provider` interface (start, stop, address) and the heartbeat probe.
- `local`: replicas as child processes of fastlb, which never outlive it.
- `static`: replicas something else runs, listed in the config.
- `docker`: replicas as Docker containers (imported only for provider = "docker", so the rest
  of fastlb runs without the Docker SDK).
- `swarm`: replicas as the tasks of a Docker Swarm service fastlb creates or adopts and scales
  (imported only for provider = "swarm").
"""

from fastlb.config import HealthConfig, ReplicasConfig
from fastlb.errors import ConfigError, ReplicaError
from fastlb.replicas.base import Provider, Replica
from fastlb.replicas.local import LocalProvider
from fastlb.replicas.static import StaticProvider

__all__ = ["LocalProvider", "Provider", "Replica", "StaticProvider", "make_provider"]


def make_provider(config: ReplicasConfig, health: HealthConfig | None = None) -> Provider:
    """The provider [replicas] asks for; `health` is the heartbeat a started replica answers."""
    if config.provider == "local":
        return LocalProvider(config, health=health)
    if config.provider == "static":
        return StaticProvider(config)
    if config.provider == "docker":
        try:
            from fastlb.replicas.docker import DockerProvider
        except ModuleNotFoundError as exc:
            raise _without_sdk(config.provider, exc) from None
        return DockerProvider(config, health)
    if config.provider == "swarm":
        try:
            from fastlb.replicas.swarm import SwarmProvider
        except ModuleNotFoundError as exc:
            raise _without_sdk(config.provider, exc) from None
        return SwarmProvider(config, health)
    raise ConfigError(f"[replicas] provider: unknown provider {config.provider!r}")


def _without_sdk(provider: str, exc: ModuleNotFoundError) -> BaseException:
    """What to say when an engine provider's import fails: the Docker SDK is missing (or the
    import failed for another reason, which is passed on as it was)."""
    if exc.name not in ("docker", "requests"):
        return exc
    return ReplicaError(
        f'provider = "{provider}" needs the Docker SDK ({exc}); install it: '
        "pip install 'docker>=6'"
    )
