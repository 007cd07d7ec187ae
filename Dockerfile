FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles

# libpq for psycopg; nothing else. The sandbox isolates runs itself (namespaces, cgroups,
# seccomp, slot uids: fmuengine/sandbox) and privileges are dropped in Python by the
# entrypoint below, so neither bubblewrap nor setpriv (util-linux) is used.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 \
 && rm -rf /var/lib/apt/lists/*

# The one account every process of the app runs as: web, the Celery workers and the
# release command. A fixed uid: the sandbox daemon is told to trust exactly this uid.
RUN groupadd --system --gid 10001 fmugw \
 && useradd --system --uid 10001 --gid fmugw --home-dir /home/fmugw --create-home \
            --shell /usr/sbin/nologin fmugw

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY . .
# collectstatic needs a SECRET_KEY to import settings; this one is for the build only.
# Then: the code and the collected static files (STATIC_ROOT, outside VAR_DIR so that
# fmugw cannot swap them) are root's and read-only to everyone else; VAR_DIR is the only
# place of the app fmugw can write (Celery beat's schedule file); and no setuid/setgid bit
# is left for a process of the app to use (with no_new_privs, which the entrypoint sets,
# they would not work anyway).
RUN SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput -v0 \
 && chown -R root:root /app \
 && chmod -R u+rwX,go+rX,go-w /app \
 && mkdir -p "$VAR_DIR" \
 && chown fmugw:fmugw "$VAR_DIR" \
 && chmod 0750 "$VAR_DIR" \
 && find / -xdev -type f -perm /6000 -exec chmod ug-s {} +

# The image's user stays root on purpose: Fly.io starts every process group with the
# image's user and has no per-group user, and the simulation worker's machine must start
# the sandbox daemon as root. The ENTRYPOINT therefore drops every command to fmugw
# before it runs (fmuengine/sandbox/entrypoint.py); only `--sandbox` (fly.toml's worker)
# keeps a root daemon, started with an empty environment, beside the unprivileged worker.
USER root
ENTRYPOINT ["python", "-m", "fmuengine.sandbox.entrypoint", "--user", "fmugw"]

EXPOSE 8000
CMD ["gunicorn", "fmugateway.wsgi", "-c", "fmugateway/gunicorn.conf.py", "--bind", "0.0.0.0:8000"]
