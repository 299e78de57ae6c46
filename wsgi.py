from bulksms.api.wsgi import app  # noqa: F401  (gunicorn wsgi:app, flask --app wsgi run)
