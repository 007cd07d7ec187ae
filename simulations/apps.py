from django.apps import AppConfig


class SimulationsConfig(AppConfig):
    name = "simulations"

    def ready(self) -> None:
        from simulations import receivers  # noqa: F401 - connects the post_delete receivers

        configure_sandbox()


def configure_sandbox() -> None:
    """Hand the engine its settings (it reads no environment itself), once per process.

    Every process, not only workers: the web reads the same settings for /readyz and the
    banner, and a management command or test that runs a model must fail closed as well.
    """
    from django.conf import settings

    from fmuengine import runner
    from simulations.workers import forget_sandbox_status

    forget_sandbox_status()
    runner.configure(
        run_root=settings.SANDBOX_RUN_ROOT,
        sandbox_socket=settings.SANDBOX_SOCKET,
        required_isolation=settings.SANDBOX_REQUIRED_ISOLATION,
        min_free_disk_bytes=settings.SANDBOX_MIN_FREE_DISK_BYTES,
    )
