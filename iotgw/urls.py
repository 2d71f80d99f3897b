"""URL routes of the one Django project: the admin, and the HTTP edge's pages, API, health and hooks."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("api.urls")),
]
