from django.urls import path

from simulations import api, api_studies

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
    path("studies", api_studies.StudyListApi.as_view(), name="api-studies"),
    path("studies/<uuid:study_id>", api_studies.StudyDetailApi.as_view(), name="api-study"),
    path(
        "studies/<uuid:study_id>/cancel",
        api_studies.StudyCancelApi.as_view(),
        name="api-study-cancel",
    ),
    path(
        "studies/<uuid:study_id>/cases",
        api_studies.StudyCaseListApi.as_view(),
        name="api-study-cases",
    ),
    path(
        "studies/<uuid:study_id>/cases/<int:index>/result",
        api_studies.StudyCaseResultApi.as_view(),
        name="api-study-case-result",
    ),
    path(
        "studies/<uuid:study_id>/summary",
        api_studies.StudySummaryApi.as_view(),
        name="api-study-summary",
    ),
    path(
        "studies/<uuid:study_id>/results",
        api_studies.StudyResultsApi.as_view(),
        name="api-study-results",
    ),
]
