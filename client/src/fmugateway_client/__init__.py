"""Python client for the FMU Gateway simulation API (and the `fmugw` command line).

from fmugateway_client import Client

client = Client("https://fmugateway.example", "fmu_...")
model = client.upload_model("BouncingBall.fmu")
result = client.simulate(model, stop_time=3, start_values={"e": 0.8})
result.records()   # [{"time": 0.0, "h": 1.0, "v": 0.0}, ...]

study = client.create_study(model, design={"kind": "grid", "parameters": {"e": [0.5, 0.9]}})
study.wait(progress=True).summary()   # one row per case (a DataFrame when pandas is there)
"""

__version__ = "0.1.0"

from fmugateway_client.client import Client
from fmugateway_client.errors import (
    ApiError,
    AuthenticationError,
    Conflict,
    FmuGatewayError,
    NotFound,
    PayloadTooLarge,
    PaymentFailed,
    PaymentRequired,
    PaymentTimeout,
    PermissionDenied,
    RateLimited,
    ServerError,
    SimulationFailed,
    SimulationTimeout,
    TransportError,
    ValidationError,
)
from fmugateway_client.notices import print_checkout_notice, print_study_checkout_notice
from fmugateway_client.resources import (
    Account,
    Model,
    Payment,
    Price,
    Simulation,
    SimulationError,
    Variable,
)
from fmugateway_client.result import Result
from fmugateway_client.studies import (
    Study,
    StudyCase,
    StudyCaseCounts,
    StudyPrice,
    StudyProgressBar,
    StudyQuote,
    StudyTimeout,
)

__all__ = [
    "Account",
    "ApiError",
    "AuthenticationError",
    "Client",
    "Conflict",
    "FmuGatewayError",
    "Model",
    "NotFound",
    "PayloadTooLarge",
    "Payment",
    "PaymentFailed",
    "PaymentRequired",
    "PaymentTimeout",
    "PermissionDenied",
    "Price",
    "RateLimited",
    "Result",
    "ServerError",
    "Simulation",
    "SimulationError",
    "SimulationFailed",
    "SimulationTimeout",
    "Study",
    "StudyCase",
    "StudyCaseCounts",
    "StudyPrice",
    "StudyProgressBar",
    "StudyQuote",
    "StudyTimeout",
    "TransportError",
    "ValidationError",
    "Variable",
    "__version__",
    "print_checkout_notice",
    "print_study_checkout_notice",
]
