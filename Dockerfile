FROM python:3.11-slim
WORKDIR /app
RUN useradd --system --uid 10001 bulksms
# Dependencies first, in a layer of their own: it is rebuilt only when pyproject.toml changes,
# not on every change to the code. They are read from pyproject.toml, the one list of them.
COPY pyproject.toml ./
RUN python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the package itself, without touching its dependencies.
COPY README.md ./
COPY bulksms ./bulksms
RUN pip install --no-cache-dir --no-deps .
COPY wsgi.py worker.py gunicorn.conf.py ./
USER bulksms
EXPOSE 8000
CMD ["gunicorn", "wsgi:app"]
