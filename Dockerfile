FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/app/var

# bubblewrap and util-linux (setpriv) isolate untrusted FMU code; libpq for psycopg.
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap util-linux libpq5 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic needs a SECRET_KEY to import settings; this one is for the build only.
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0

EXPOSE 8000
CMD ["gunicorn", "fmugateway.wsgi", "-c", "fmugateway/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
