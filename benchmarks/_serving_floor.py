"""The floor of ``benchmarks/serving.py``: a minimal Starlette app that only calls ``predict``.

Run by the benchmark as ``uvicorn _serving_floor:app`` (one process) with ``FLOOR_MODEL`` set
to the fitted scikit-learn pipeline (``pipeline.joblib``, pickled by benchmarks/serving.py) and
``FLOOR_COLUMNS`` to the comma-separated input columns. ``POST /invocations`` takes
``{"records": [...]}``, builds a DataFrame and answers the labels and class probabilities from
one ``predict_proba`` (what civicml's endpoint computes too). No validation, no capture, no
thread pool: the handler predicts on the event loop.
"""

from __future__ import annotations

import json
import os

import joblib  # type: ignore[import-untyped]
import pandas as pd  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PIPELINE = joblib.load(os.environ["FLOOR_MODEL"])
COLUMNS = os.environ["FLOOR_COLUMNS"].split(",")
CLASSES = PIPELINE.classes_


async def invocations(request: Request) -> Response:
    records = json.loads(await request.body())["records"]
    proba = PIPELINE.predict_proba(pd.DataFrame(records, columns=COLUMNS))
    body = {"predictions": CLASSES[proba.argmax(axis=1)].tolist(), "probabilities": proba.tolist()}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


async def health(request: Request) -> Response:
    return Response("ok")


app = Starlette(
    routes=[Route("/invocations", invocations, methods=["POST"]), Route("/health", health)]
)
