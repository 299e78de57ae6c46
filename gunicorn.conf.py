"""gunicorn reads this file from its working directory: the settings are the package's."""

from bulksms.api.gunicorn_conf import *  # noqa: F403
