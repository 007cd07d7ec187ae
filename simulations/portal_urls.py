from django.urls import path

from simulations import study_views, views

app_name = "portal"

urlpatterns = [
    path("models/", views.model_list, name="models"),
    path("models/<uuid:model_id>/", views.model_detail, name="model"),
    path("models/<uuid:model_id>/run/", views.model_run, name="model-run"),
    path("models/<uuid:model_id>/delete/", views.model_delete, name="model-delete"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<uuid:simulation_id>/", views.run_detail, name="run"),
    path("runs/<uuid:simulation_id>/cancel/", views.run_cancel, name="run-cancel"),
    path("models/<uuid:model_id>/study/", study_views.study_new, name="model-study"),
    path("studies/", study_views.study_list, name="studies"),
    path("studies/<uuid:study_id>/", study_views.study_detail, name="study"),
    path("studies/<uuid:study_id>/cancel/", study_views.study_cancel, name="study-cancel"),
    path("studies/<uuid:study_id>/delete/", study_views.study_delete, name="study-delete"),
]
