"""The second floor of ``benchmarks/serving.py``: Starlette + civicml's *own* compiled fast path.

The first floor (``_serving_floor.py``) calls scikit-learn's ``predict_proba``, which civicml's
compiled fast path beats 10-20x, so a ratio against it hides what civicml itself costs around
the arithmetic. This one does the same arithmetic civicml does — the model is loaded with
``TabularModel.load`` from ``FASTFLOOR_MODEL_DIR`` and compiled with ``compile_fast_path`` — and
nothing else: ``json.loads``, ``FastPath.encode`` (the same checks of the records against the
signature), ``FastPath.predict``, ``json.dumps``. No authentication, no capture, no variants, no
metrics, no audit; it predicts on the event loop, as civicml does for linear models.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from civicml.serving.fastpath import compile_fast_path
from civicml.training.model import TabularModel

MODEL = TabularModel.load(Path(os.environ["FASTFLOOR_MODEL_DIR"]))
FAST = compile_fast_path(MODEL)
if FAST is None:
    raise SystemExit("the benchmark model does not compile to civicml's fast path")


async def invocations(request: Request) -> Response:
    records = json.loads(await request.body())["records"]
    batch = FAST.encode(records)
    if batch is None:
        return Response('{"detail":"records do not fit the signature"}', status_code=422)
    labels, proba = FAST.predict(batch)
    body = {"predictions": labels, "probabilities": proba}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


async def health(request: Request) -> Response:
    return Response("ok")


app = Starlette(
    routes=[Route("/invocations", invocations, methods=["POST"]), Route("/health", health)]
)
