from django.urls import path

from simulations import api

api_urlpatterns = [
    path("models", api.ModelListApi.as_view(), name="api-models"),
    path("models/<uuid:model_id>", api.ModelDetailApi.as_view(), name="api-model"),
    path(
        "models/<uuid:model_id>/variables",
        api.ModelVariablesApi.as_view(),
        name="api-model-variables",
    ),
    path("simulations", api.SimulationListApi.as_view(), name="api-simulations"),
    path(
        "simulations/<uuid:simulation_id>", api.SimulationDetailApi.as_view(), name="api-simulation"
    ),
    path(
        "simulations/<uuid:simulation_id>/cancel",
        api.SimulationCancelApi.as_view(),
        name="api-simulation-cancel",
    ),
    path(
        "simulations/<uuid:simulation_id>/result",
        api.SimulationResultApi.as_view(),
        name="api-simulation-result",
    ),
]
