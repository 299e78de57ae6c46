FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bulksms ./bulksms
RUN pip install --no-cache-dir . && useradd --system --uid 10001 bulksms
COPY wsgi.py worker.py gunicorn.conf.py ./
USER bulksms
EXPOSE 8000
CMD ["gunicorn", "wsgi:app"]
