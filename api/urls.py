"""The HTTP edge's routes: the dashboard pages, the JSON API, health and metrics, the broker hooks."""

from django.contrib.auth import views as auth_views
from django.urls import path, re_path

from api import broker_auth, health, pages
from api.rest import api
from core.ids import DEVICE_ID_BODY

urlpatterns = [
    path("", pages.fleet, name="fleet"),
    re_path(rf"^devices/(?P<device_id>{DEVICE_ID_BODY})/$", pages.device, name="device"),
    path("notifications/", pages.notifications, name="notifications"),
    path("alarms/", pages.alarms, name="alarms"),
    path("login/", auth_views.LoginView.as_view(template_name="pages/login.html", redirect_authenticated_user=True),
         name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path("api/", api.urls),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", health.metrics_view),
    path("mqtt/auth", broker_auth.mqtt_auth),
    path("mqtt/acl", broker_auth.mqtt_acl),
    path("mqtt/superuser", broker_auth.mqtt_superuser),
]
