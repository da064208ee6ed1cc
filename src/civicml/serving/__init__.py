"""Serving: real-time endpoints for approved model versions, with variants, shadow tests, guarded
rollouts and data capture.

``EndpointService`` deploys an ``Approved`` model version under an endpoint name and switches it
to newer versions; ``VariantService`` holds several versions behind one endpoint with traffic
weights (and at most one shadow, which gets a sampled copy of live requests and is never
answered); ``RolloutService`` moves traffic to a new version in baked steps (all at once, canary,
linear) and rolls back by itself when an alarm fires; ``ShadowReportService`` compares a
shadow's captured answers with the live ones and says whether to promote it;
``MultiModelService`` makes multi-model endpoints, whose requests each name their model (loaded
on first use, least recently used unloaded under a memory limit). ``ModelHost`` loads
each version from hash-verified files, compiles its pipeline to NumPy
(``civicml.serving.fastpath``) and answers invocations (validated against the model's
signature; with SHAP explanations on request) without a failed request during a switch;
``CaptureWriter`` records a sample of requests and responses in SageMaker's capture format, and
``CaptureService`` turns them into a dataset version for monitoring. ``BatchService`` runs batch
prediction jobs: a dataset version in, a predictions dataset version out, chunk by chunk.
"""

from civicml.serving.batch import BatchService
from civicml.serving.batch_schemas import BatchJob, BatchJobCreate, BatchJobStatus, BatchJoin
from civicml.serving.capture import CaptureEvent, CaptureService, CaptureWriter
from civicml.serving.comparison import ShadowComparison
from civicml.serving.multimodel import MultiModelService
from civicml.serving.rollout import RolloutService, RolloutTicker, set_monitor_status
from civicml.serving.runtime import Invocation, LoadedModel, ModelHost
from civicml.serving.schemas import (
    CaptureConfig,
    EndpointInfo,
    EndpointMode,
    EndpointModel,
    EndpointStatus,
    InvocationResult,
    ModelCacheStats,
    RolloutInfo,
    RolloutStatus,
    RolloutStrategy,
    VariantInfo,
    VariantRole,
)
from civicml.serving.service import EndpointService
from civicml.serving.shadow_reports import ShadowReport, ShadowReportService
from civicml.serving.variants import VariantService

__all__ = [
    "BatchJob",
    "BatchJobCreate",
    "BatchJobStatus",
    "BatchJoin",
    "BatchService",
    "CaptureConfig",
    "CaptureEvent",
    "CaptureService",
    "CaptureWriter",
    "EndpointInfo",
    "EndpointMode",
    "EndpointModel",
    "EndpointService",
    "EndpointStatus",
    "Invocation",
    "InvocationResult",
    "LoadedModel",
    "ModelCacheStats",
    "ModelHost",
    "MultiModelService",
    "RolloutInfo",
    "RolloutService",
    "RolloutStatus",
    "RolloutStrategy",
    "RolloutTicker",
    "ShadowComparison",
    "ShadowReport",
    "ShadowReportService",
    "VariantInfo",
    "VariantRole",
    "VariantService",
    "set_monitor_status",
]
