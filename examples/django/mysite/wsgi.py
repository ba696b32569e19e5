"""The WSGI entry point prefork serves: ``prefork mysite.wsgi:application``,
run from the directory that holds manage.py (or with ``--chdir`` to it)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

application = get_wsgi_application()
