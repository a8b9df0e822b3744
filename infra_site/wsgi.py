"""WSGI entry point."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infra_site.settings")
application = get_wsgi_application()

from infra_site import serving  # noqa: E402 (needs the settings that making the application set up)

serving.prepare()
