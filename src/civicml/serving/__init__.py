"""Serving: real-time endpoints for approved model versions, with data capture.

``EndpointService`` deploys an ``Approved`` model version under an endpoint name and switches it
to newer versions; ``ModelHost`` loads each version from hash-verified files, compiles its
pipeline to NumPy (``civicml.serving.fastpath``) and answers invocations (validated against the
model's signature; with SHAP explanations on request) without a failed request during a switch;
``CaptureWriter`` records a sample of requests and responses in SageMaker's capture format, and
``CaptureService`` turns them into a dataset version for monitoring.
"""

from civicml.serving.capture import CaptureEvent, CaptureService, CaptureWriter
from civicml.serving.runtime import Invocation, LoadedModel, ModelHost
from civicml.serving.schemas import (
    CaptureConfig,
    EndpointInfo,
    EndpointStatus,
    InvocationResult,
)
from civicml.serving.service import EndpointService

__all__ = [
    "CaptureConfig",
    "CaptureEvent",
    "CaptureService",
    "CaptureWriter",
    "EndpointInfo",
    "EndpointService",
    "EndpointStatus",
    "Invocation",
    "InvocationResult",
    "LoadedModel",
    "ModelHost",
]
