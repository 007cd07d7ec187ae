from django.urls import path

from simulations import views

app_name = "portal"

urlpatterns = [
    path("models/", views.model_list, name="models"),
    path("models/<uuid:model_id>/", views.model_detail, name="model"),
    path("models/<uuid:model_id>/run/", views.model_run, name="model-run"),
    path("models/<uuid:model_id>/delete/", views.model_delete, name="model-delete"),
    path("runs/", views.run_list, name="runs"),
    path("runs/<uuid:simulation_id>/", views.run_detail, name="run"),
    path("runs/<uuid:simulation_id>/cancel/", views.run_cancel, name="run-cancel"),
]
