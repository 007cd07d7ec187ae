from django.apps import AppConfig


class FmuGatewayConfig(AppConfig):
    name = "fmugateway"
    verbose_name = "FMU Gateway"
