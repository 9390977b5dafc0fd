# The service under gunicorn, with DCMTK from Debian's packages.
FROM python:3.11-slim-bookworm

RUN apt-get update \
    && apt-get install -y --no-install-recommends dcmtk \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/dicom-service
COPY setup.cfg pyproject.toml README.md gunicorn.conf.py ./
COPY app ./app
COPY templates_dump ./templates_dump
RUN pip install --no-cache-dir .

RUN useradd --system --home-dir /var/lib/dicom --shell /usr/sbin/nologin dicom \
    && mkdir -p /var/lib/dicom/instances /var/lib/dicom/worklists \
    && chown -R dicom:dicom /var/lib/dicom

ENV PORT=3000 \
    DICOM_STORAGE_DIR=/var/lib/dicom/instances \
    WORKLIST_DIR=/var/lib/dicom/worklists \
    PYTHONUNBUFFERED=1

USER dicom
VOLUME ["/var/lib/dicom"]
EXPOSE 3000

HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=8)"

CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:create_app()"]
