"""Multi-model endpoints: routing by target, the LRU cache under a memory limit, concurrent first
requests, verification of every load, hostile targets, changes without a redeploy, permissions."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from civicml.core import ArtifactIntegrityError, ConflictError, NotFoundError, Principal
from civicml.core.errors import BadRequestError, InvalidInputError, PermissionDeniedError
from civicml.registry import ModelVersion, RegistryService
from civicml.serving import CaptureService, EndpointService, ModelHost, VariantService, runtime
from civicml.serving.model_cache import ModelCache
from civicml.serving.multimodel import MultiModelService
from civicml.serving.schemas import EndpointMode
from civicml.store import Context
from civicml.training import TabularModel
from tests.serving.helpers import PROJECT, records, tamper

MB = 1 << 20


def register_as(ctx: Context, directory: Path, name: str) -> ModelVersion:
    """Register the saved model in ``directory`` as model ``name``, approved by a reviewer."""
    model = TabularModel.load(directory)
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted(directory.iterdir())}
    mv = RegistryService(ctx).register(PROJECT, name, artifacts=digests, signature=model.signature)
    reviewer = RegistryService(ctx.as_principal(Principal(user="reviewer")))
    return reviewer.approve(PROJECT, name, mv.version, "validated on the hold-out set")


def size_of(ctx: Context, mv: ModelVersion) -> int:
    files = RegistryService(ctx).get_manifest(mv)["files"]
    return sum(int(f["size"]) for f in files.values())


@pytest.fixture
def three(ctx: Context, project: str, model_dirs: tuple[Path, Path]) -> list[ModelVersion]:
    """Models a (v1's files), b (v2's) and c (v1's again): three versions of equal size."""
    return [
        register_as(ctx, model_dirs[0], "a"),
        register_as(ctx, model_dirs[1], "b"),
        register_as(ctx, model_dirs[0], "c"),
    ]


def mme(
    ctx: Context, host: ModelHost, models: list[ModelVersion], cache_mb: float | None = None
) -> None:
    EndpointService(ctx, host).deploy(
        PROJECT,
        "many",
        models[0].name,
        models[0].version,
        mode="multi-model",
        models=[(m.name, m.version) for m in models[1:]],
        model_cache_mb=cache_mb,
    )


def test_requests_are_routed_by_target_model(
    ctx: Context, three: list[ModelVersion], model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    mme(ctx, host, three)
    info = EndpointService(ctx, host).get(PROJECT, "many")
    assert info.mode is EndpointMode.MULTI_MODEL
    assert [m.target for m in info.models] == ["a/1", "b/1", "c/1"]
    assert info.variants == []
    rows = records(20)
    for target, directory in (("a", model_dirs[0]), ("b/1", model_dirs[1]), ("C", model_dirs[0])):
        result = host.invoke(PROJECT, "many", rows, target=target)
        assert result["predictions"] == TabularModel.load(directory).predict(rows).tolist()
        assert result["target_model"] == result["variant"]
        assert result["target_model"].lower().startswith(target.lower()[0] + "/1")
    stats = EndpointService(ctx, host).get(PROJECT, "many").model_cache
    assert stats is not None and (stats.loads, stats.hits) == (3, 0)
    assert stats.loaded == ["a/1", "b/1", "c/1"]
    # Prometheus and the rollout counters label each answer by its model
    counted = {s.variant: s.invocations for s in host.variant_samples() if s.endpoint == "many"}
    assert counted == {"a/1": 1, "b/1": 1, "c/1": 1}
    # captured records name the model and version that answered
    host.capture.flush()
    captured = list(CaptureService(ctx, host.capture).records(PROJECT, "many"))
    meta = sorted((r["eventMetadata"]["variant"], r["eventMetadata"]["modelName"],
                   r["eventMetadata"]["modelVersion"]) for r in captured)  # fmt: skip
    assert meta[0] == ("a/1", "a", 1) and {m[0] for m in meta} == {"a/1", "b/1", "c/1"}


def test_the_lru_cache_unloads_the_least_recently_used_model(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    size = size_of(ctx, three[0])
    mme(ctx, host, three, cache_mb=2.5 * size / MB)  # room for two
    for target in ("a", "b", "a", "c"):  # c pushes out b, the least recently used
        host.invoke(PROJECT, "many", records(1), target=target)
    stats = EndpointService(ctx, host).get(PROJECT, "many").model_cache
    assert stats is not None
    assert stats.loaded == ["a/1", "c/1"]
    assert (stats.loads, stats.hits, stats.evictions) == (3, 1, 1)
    assert stats.used_bytes == 2 * size <= stats.limit_bytes
    host.invoke(PROJECT, "many", records(1), target="b")  # loaded again: a goes
    stats = EndpointService(ctx, host).get(PROJECT, "many").model_cache
    assert stats is not None
    assert (stats.loads, stats.evictions, stats.loaded) == (4, 2, ["c/1", "b/1"])
    # a smaller limit applies at once: room for one
    info = EndpointService(ctx, host).update(PROJECT, "many", model_cache_mb=1.5 * size / MB)
    assert info.model_cache_mb == 1.5 * size / MB
    assert info.model_cache is not None and info.model_cache.loaded == ["b/1"]
    EndpointService(ctx, host).deploy(PROJECT, "one", "a", 1)
    with pytest.raises(ConflictError, match="only multi-model endpoints have a model cache"):
        EndpointService(ctx, host).update(PROJECT, "one", model_cache_mb=10)


def test_concurrent_requests_over_three_models_under_a_limit_of_two(
    ctx: Context, three: list[ModelVersion], host: ModelHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    mme(ctx, host, three, cache_mb=2.5 * size_of(ctx, three[0]) / MB)
    loads: Counter[str] = Counter()
    real = runtime.load_version

    def counted(ctx: Context, mv: ModelVersion, root: Path) -> Any:
        loads[mv.name] += 1
        return real(ctx, mv, root)

    monkeypatch.setattr(runtime, "load_version", counted)
    start = threading.Barrier(12)
    failures: list[BaseException] = []
    answered: Counter[str] = Counter()

    def client(i: int) -> None:
        start.wait()
        for n in range(15):
            target = "abc"[(i + n) % 3]
            try:
                result = host.invoke(PROJECT, "many", records(2, seed=n), target=target)
                answered[result["target_model"]] += 1
            except BaseException as err:
                failures.append(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert answered == {"a/1": 60, "b/1": 60, "c/1": 60}
    stats = host.model_cache(EndpointService(ctx, host).get(PROJECT, "many").id)
    assert stats is not None and len(stats.loaded) <= 2
    assert stats.loads == sum(loads.values()) >= 3
    assert stats.evictions == stats.loads - len(stats.loaded)


def test_concurrent_first_requests_load_a_model_once(
    ctx: Context, three: list[ModelVersion], host: ModelHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    mme(ctx, host, three)
    release = threading.Event()
    calls: list[str] = []
    real = runtime.load_version

    def slow(ctx: Context, mv: ModelVersion, root: Path) -> Any:
        calls.append(mv.name)
        release.wait(10)
        return real(ctx, mv, root)

    monkeypatch.setattr(runtime, "load_version", slow)
    results: list[Any] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                host.invoke(PROJECT, "many", records(1), target="a")["target_model"]
            )
        )
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    while not calls:
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join()
    assert calls == ["a"]
    assert results == ["a/1"] * 8


def test_a_model_failing_verification_is_refused_never_served(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    mme(ctx, host, three[:2])
    manifest = RegistryService(ctx).get_manifest(three[1])
    tamper(ctx, manifest["files"]["model.skops"]["digest"])  # b's model file
    for _ in range(2):  # refused each time, never remembered as loaded
        with pytest.raises(ArtifactIntegrityError, match="failed its integrity check"):
            host.invoke(PROJECT, "many", records(1), target="b")
    assert host.invoke(PROJECT, "many", records(1), target="a")["target_model"] == "a/1"
    stats = host.model_cache(EndpointService(ctx, host).get(PROJECT, "many").id)
    assert stats is not None
    assert (stats.loaded, stats.load_failures) == (("a/1",), 2)


def test_a_version_no_longer_approved_is_not_loaded(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    mme(ctx, host, three[:2])
    RegistryService(ctx).archive_version(PROJECT, "b", 1)
    with pytest.raises(ConflictError, match="archived"):
        host.invoke(PROJECT, "many", records(1), target="b")


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        (None, BadRequestError, "must name its model"),
        ("x" * 300, BadRequestError, "at most 257 are allowed"),
        ("a b", BadRequestError, "not MODEL or MODEL/VERSION"),
        ("../etc/passwd", BadRequestError, "not MODEL or MODEL/VERSION"),
        ("a/1/2", BadRequestError, "not MODEL or MODEL/VERSION"),
        ("a\x00", BadRequestError, "not MODEL or MODEL/VERSION"),
        ("é", BadRequestError, "not MODEL or MODEL/VERSION"),
        ("bb", NotFoundError, "serves no model 'bb'"),
        ("a/7", NotFoundError, "holds no version '7' of model 'a'"),
    ],
)
def test_bad_and_unknown_targets_are_refused(
    ctx: Context,
    three: list[ModelVersion],
    host: ModelHost,
    target: str | None,
    error: type[Exception],
    message: str,
) -> None:
    mme(ctx, host, three[:2])
    with pytest.raises(error, match=message):
        host.invoke(PROJECT, "many", records(1), target=target)
    stats = host.model_cache(EndpointService(ctx, host).get(PROJECT, "many").id)
    assert stats is not None and stats.loads == 0


def test_unknown_model_hint_names_close_ones(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    EndpointService(ctx, host).deploy(PROJECT, "many", "a", 1, mode="multi-model")
    MultiModelService(ctx, host).add(PROJECT, "many", "b", 1)
    with pytest.raises(NotFoundError) as caught:
        host.invoke(PROJECT, "many", records(1), target="bb")
    assert caught.value.hint == "Did you mean 'b'?"


def test_models_are_added_and_removed_without_a_redeploy(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    svc = MultiModelService(ctx, host)
    EndpointService(ctx, host).deploy(PROJECT, "many", "a", 1, mode="multi-model")
    with pytest.raises(NotFoundError):
        host.invoke(PROJECT, "many", records(1), target="c")
    info = svc.add(PROJECT, "many", "c", "1")
    assert [m.target for m in info.models] == ["a/1", "c/1"]
    assert host.invoke(PROJECT, "many", records(1), target="c")["target_model"] == "c/1"
    with pytest.raises(ConflictError, match="already serves c/1"):
        svc.add(PROJECT, "many", "c", 1)
    info = svc.remove(PROJECT, "many", "a")
    assert [m.target for m in svc.list(PROJECT, "many")] == ["c/1"]
    assert info.model_name == "c"  # the row names a model the endpoint still holds
    with pytest.raises(NotFoundError, match="serves no model 'a'"):
        host.invoke(PROJECT, "many", records(1), target="a")
    with pytest.raises(ConflictError, match="without any model"):
        svc.remove(PROJECT, "many", "c")
    with pytest.raises(NotFoundError, match="serves no model 'cc'") as caught:
        svc.remove(PROJECT, "many", "cc")
    assert caught.value.hint == "Did you mean 'c'?"
    events = [e.action for e in ctx_audit(ctx)]
    assert events.count("endpoint.model_added") == 1
    assert events.count("endpoint.model_removed") == 1


def ctx_audit(ctx: Context) -> list[Any]:
    from civicml.governance.audit import AuditTrail

    return list(AuditTrail(ctx).list(project=PROJECT, limit=1000))


def test_single_model_operations_are_refused_on_a_multi_model_endpoint(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    mme(ctx, host, three[:2])
    endpoints = EndpointService(ctx, host)
    with pytest.raises(ConflictError, match="multi-model endpoint"):
        endpoints.update(PROJECT, "many", 1, model_name="a")
    with pytest.raises(ConflictError, match="multi-model endpoint"):
        endpoints.update(PROJECT, "many", 1, model_name="a", strategy="canary", bake_s=0)
    with pytest.raises(ConflictError, match="multi-model endpoint"):
        VariantService(ctx, host).put(PROJECT, "many", "green", "a", 1, weight=1)
    with pytest.raises(BadRequestError, match="no variants to pin"):
        host.invoke(PROJECT, "many", records(1), target="a", variant="x")
    assert endpoints.update(PROJECT, "many", capture_percent=10).capture.percent == 10
    # and the other way round: a single-model endpoint takes no target, and no models
    endpoints.deploy(PROJECT, "one", "a", 1)
    with pytest.raises(BadRequestError, match="takes no target model"):
        host.invoke(PROJECT, "one", records(1), target="a")
    with pytest.raises(ConflictError, match="single-model endpoint"):
        MultiModelService(ctx, host).add(PROJECT, "one", "b", 1)
    endpoints.delete(PROJECT, "many")
    assert [e.name for e in endpoints.list(PROJECT)] == ["one"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model_cache_mb": 0}, "Model cache limit 0"),
        ({"model_cache_mb": float("nan")}, "Model cache limit nan"),
        ({"variant": "x"}, "has no variants"),
    ],
)
def test_bad_multi_model_deploys_are_refused(
    ctx: Context, three: list[ModelVersion], host: ModelHost, kwargs: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        EndpointService(ctx, host).deploy(PROJECT, "many", "a", 1, mode="multi-model", **kwargs)
    with pytest.raises(InvalidInputError, match="need mode 'multi-model'"):
        EndpointService(ctx, host).deploy(PROJECT, "one", "a", 1, models=[("b", 1)])
    with pytest.raises(InvalidInputError, match="named twice"):
        EndpointService(ctx, host).deploy(
            PROJECT, "many", "a", 1, mode="multi-model", models=[("A", "1")]
        )


def test_an_unapproved_version_cannot_be_added(
    ctx: Context, project: str, model_dirs: tuple[Path, Path], host: ModelHost
) -> None:
    register_as(ctx, model_dirs[0], "a")
    model = TabularModel.load(model_dirs[1])
    digests = {p.name: ctx.artifacts.put_file(p).digest for p in sorted(model_dirs[1].iterdir())}
    RegistryService(ctx).register(PROJECT, "d", artifacts=digests, signature=model.signature)
    EndpointService(ctx, host).deploy(PROJECT, "many", "a", 1, mode="multi-model")
    with pytest.raises(ConflictError, match="PendingManualApproval"):
        MultiModelService(ctx, host).add(PROJECT, "many", "d", 1)


def test_permissions_are_checked_in_the_service(
    ctx: Context, three: list[ModelVersion], host: ModelHost
) -> None:
    mme(ctx, host, three[:2])
    viewer = ctx.as_principal(Principal(user="val", roles=frozenset({"viewer"})))
    svc = MultiModelService(viewer, host)
    assert [m.target for m in svc.list(PROJECT, "many")] == ["a/1", "b/1"]
    for attempt in (
        lambda: svc.add(PROJECT, "many", "c", 1),
        lambda: svc.remove(PROJECT, "many", "a"),
        lambda: EndpointService(viewer, host).deploy(PROJECT, "x", "a", 1, mode="multi-model"),
    ):
        with pytest.raises(PermissionDeniedError, match=r"endpoints\.write"):
            attempt()
    with pytest.raises(PermissionDeniedError, match=r"endpoints\.invoke"):
        host.invoke(PROJECT, "many", records(1), target="a", caller=viewer.principal)
    invoker = Principal(user="ivy", roles=frozenset({"invoker"}))
    assert host.invoke(PROJECT, "many", records(1), target="a", caller=invoker)["predictions"]


def test_the_cache_alone() -> None:
    cache: ModelCache[str] = ModelCache(100)
    assert cache.get("big", 500, lambda: "big") == "big"  # bigger than the limit: alone
    assert cache.counters().loaded == ("big",)
    assert cache.get("a", 40, lambda: "a") == "a"
    assert cache.get("b", 40, lambda: "b") == "b"
    assert cache.counters().loaded == ("a", "b")
    with pytest.raises(RuntimeError):
        cache.get("c", 10, _boom)
    assert cache.counters().load_failures == 1
    assert cache.peek("a") == "a"
    cache.resize(50)  # b is least recently used now
    assert cache.counters().loaded == ("a",)
    cache.discard([])
    assert cache.counters().used_bytes == 0


def _boom() -> str:
    raise RuntimeError("no")
