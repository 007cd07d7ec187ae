from django.apps import AppConfig


class SimulationsConfig(AppConfig):
    name = "simulations"

    def ready(self) -> None:
        from simulations import receivers  # noqa: F401 - connects the post_delete receivers
