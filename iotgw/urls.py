"""URL routes: admin, health, metrics, and the dashboard pages."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from devices import broker_auth, health, pages
from devices.api import api

urlpatterns = [
    path("", pages.fleet, name="fleet"),
    re_path(r"^devices/(?P<device_id>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})/$", pages.device, name="device"),
    path("login/", auth_views.LoginView.as_view(template_name="devices/login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", health.metrics_view),
    path("mqtt/auth", broker_auth.mqtt_auth),
    path("mqtt/acl", broker_auth.mqtt_acl),
    path("mqtt/superuser", broker_auth.mqtt_superuser),
]
