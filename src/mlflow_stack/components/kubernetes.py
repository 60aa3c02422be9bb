"""The Kubernetes objects: plan, apply and uninstall with server-side apply.

Objects are applied in render's order (namespace, Secrets, PVCs, migration Job -> wait,
Deployment -> wait for rollout, Service, Ingress/HTTPRoute, NetworkPolicy, PDB, discovery),
with field manager `mlflow-stack`. Every object is first compared with a server-side dry-run
apply: what the dry run returns is exactly what a real apply would store, so an object whose
dry run equals the live object is not written at all (a second apply makes zero writes).

Conflicts are forced, but only on the fields we send: SSA never removes or takes over a field
we don't set, so an annotation or a container another manager added stays. A field of ours that
someone changed by hand (replicas, an env var) is drift, and apply puts it back.

Objects this tool applied earlier but no longer renders (an old migration Job, a PDB after
replicas went back to 1) are pruned; PVCs and the namespace never are.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2
from lightkube import ApiError
from lightkube.core.resource import api_info
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.batch_v1 import CronJob, Job
from lightkube.resources.core_v1 import ConfigMap, Secret, Service
from lightkube.resources.networking_v1 import Ingress, NetworkPolicy
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

from mlflow_stack.components.base import Action, Change
from mlflow_stack.components.protocol import Finding, Step, ok, problem, run_steps
from mlflow_stack.config.existing_secrets import ExistingSecret
from mlflow_stack.config.model import Settings
from mlflow_stack.errors import StackError
from mlflow_stack.kubernetes import sources
from mlflow_stack.kubernetes.client import (
    HTTPRoute,
    Kube,
    KubernetesError,
    PrometheusRule,
    ServiceMonitor,
    as_dict,
    call,
    connect,
    get_or_none,
    resource_of,
)
from mlflow_stack.kubernetes.diff import field_diff
from mlflow_stack.kubernetes.wait import job_state, rollout_state, wait_job, wait_rollout
from mlflow_stack.manifests import labels as lb
from mlflow_stack.manifests.discovery import Patch, tracking_uri
from mlflow_stack.manifests.render import new_secret_key, render
from mlflow_stack.manifests.secret_objects import SecretNeeded, secret_object, tls_secret_spec
from mlflow_stack.progress import NullProgress, Progress

SYSTEM_NAME = "kubernetes"
JOB_TIMEOUT = 900.0  # a schema migration of a large database can take minutes
_KEEP = {"PersistentVolumeClaim", "Namespace"}  # data and the namespace: only --purge
# Kinds apply may have created, listed by label to find what it no longer renders.
_PRUNABLE: tuple[Any, ...] = (ConfigMap, Secret, Job, Deployment, Service, Ingress, HTTPRoute,
                              NetworkPolicy, PodDisruptionBudget, HorizontalPodAutoscaler,
                              CronJob, ServiceMonitor, PrometheusRule)
# Holds a Deployment's `replicas` for a moment while our manager lets go of it for an HPA: a
# field its only owner stops sending is reset to the default (1 pod) by server-side apply.
HANDOVER_MANAGER = "mlflow-stack-replicas-handover"
# Requests in flight at once while observing: enough to hide the round trips of a remote API
# server, few next to its limit (--max-requests-inflight, 400 by default).
_READERS = 8


def rollout_timeout(settings: Settings) -> float:
    # The startup probe allows health_timeout per pod; leave room for pulling the image.
    return max(300.0, settings.server.health_timeout + 120.0)


def target(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    ns = meta.get("namespace")
    return f"{obj['kind']} {ns}/{meta['name']}" if ns else f"{obj['kind']} {meta['name']}"


def describe(settings: Settings) -> str:
    k = settings.kubernetes
    where = f"context {k.context}" if k.context else (
        f"kubeconfig {k.kubeconfig}" if k.kubeconfig else "the current kubeconfig")
    return f"namespace {k.namespace} via {where}"


@dataclass
class Desired:
    objects: list[dict[str, Any]]  # in apply order, Secrets with their values
    kept: list[SecretNeeded]  # Secrets whose values are not known here
    patches: list[Patch]
    notes: list[str]


@dataclass
class Item:
    """One object's plan: what apply would do to it."""

    obj: dict[str, Any]
    change: Change
    live: dict[str, Any] | None = None
    recreate: bool = False  # an immutable Job whose template changed
    handover: int | None = None  # replicas to hand over to the autoscaler before applying
    needs_values: bool = False  # a Secret that does not exist and whose values are unknown
    patch: bool = False  # a patch of an object we don't own (code-server)
    existing: bool = False  # kubernetes.existing_secrets: checked only, never written


@dataclass
class Report:
    changes: list[Change]
    writes: int  # create/update/delete calls actually made (0 on a converged re-apply)
    url: str
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# desired state


def desired(kube: Kube, settings: Settings) -> Desired:
    """The rendered objects with every Secret value this run can know (settings resolved:
    the OIDC client secret and S3 keys are in them already)."""
    k = settings.kubernetes
    notes: list[str] = []
    secret_key = None
    if settings.sso and not k.existing_secrets.session_key:  # an existing one is not ours
        # Never regenerated: an explicit key wins, then the one already in the cluster.
        secret_key = settings.secrets.secret_key or sources.existing_secret_key(kube, settings)
        if secret_key is None:
            secret_key = new_secret_key()
            notes.append("created the SSO session key (SECRET_KEY); later applies reuse it")
    rendered = render(settings, include_secrets=True, secret_key=secret_key)
    extra: list[dict[str, Any]] = []
    kept: list[SecretNeeded] = []
    for need in rendered.secrets_needed:
        if need.type == "kubernetes.io/tls" and need.name == k.tls_secret:
            values = sources.tls_values(kube, settings)
            if values is not None:
                spec = tls_secret_spec(settings)
                spec.values = values
                extra.append(secret_object(settings, spec))
                continue
        kept.append(need)
    objects = list(rendered.objects)
    last_secret = max(i for i, o in enumerate(objects) if o["kind"] in ("Namespace", "Secret"))
    objects[last_secret + 1:last_secret + 1] = extra
    patches = list(rendered.patches)
    d = settings.discovery
    if d.enabled and d.code_server and d.code_server_namespace != k.namespace \
            and not sources.namespace_exists(kube, d.code_server_namespace):
        # code-server's namespace is not ours to create: integrate once it exists.
        objects = [o for o in objects if o["metadata"].get("namespace") != d.code_server_namespace]
        kept = [n for n in kept if n.namespace != d.code_server_namespace]
        patches = []
        notes.append(f"namespace {d.code_server_namespace} does not exist: code-server "
                     "integration skipped (apply again once code-server is installed)")
    return Desired(objects, kept, patches, notes + rendered.notes)


# --------------------------------------------------------------------------------------------
# observing


def _get(kube: Kube, res: Any, name: str, namespace: str | None) -> dict[str, Any] | None:
    live = get_or_none(kube, res, name, namespace)
    return None if live is None else as_dict(live)


def get_live(kube: Kube, obj: dict[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    return _get(kube, resource_of(obj), meta["name"], meta.get("namespace"))


def _ssa(kube: Kube, obj: dict[str, Any], *, dry_run: bool) -> dict[str, Any]:
    """Server-side apply of the manifest exactly as rendered (no model round trip)."""
    meta = obj["metadata"]
    return as_dict(kube.client.patch(
        resource_of(obj), meta["name"], obj, namespace=meta.get("namespace"),
        patch_type=PatchType.APPLY, field_manager=lb.FIELD_MANAGER, force=True, dry_run=dry_run))


def _create_detail(obj: dict[str, Any]) -> str:
    if obj["kind"] == "Secret":  # key names only, never values
        return f"keys {', '.join(sorted(obj.get('data', {})))}"
    return ""


def _observe(kube: Kube, obj: dict[str, Any], *, patch: bool = False) -> Item:
    t = target(obj)
    live = get_live(kube, obj)
    if live is None:
        if patch:
            return Item(obj, Change(SYSTEM_NAME, "unchanged", t, "not there: nothing to patch"),
                        patch=True)
        if obj["kind"] in _OPERATOR_KINDS:
            _require_api(kube, obj)
        return Item(obj, Change(SYSTEM_NAME, "create", t, _create_detail(obj)))
    with call(kube, f"check {t} (server-side dry run)"):
        try:
            dry = _ssa(kube, obj, dry_run=True)
        except ApiError as exc:
            if obj["kind"] != "Job" or exc.status.code != 422:
                raise
            return Item(obj, Change(SYSTEM_NAME, "update", t, "recreate: a Job's template is "
                                    "immutable"), live, recreate=True)
    diff = field_diff(live, dry)
    handover = _replicas_to_hand_over(obj, live)
    if handover is not None:
        # The dry run shows the reset to 1 the handover (see _write) avoids.
        diff = [line for line in diff if not line.startswith("spec.replicas:")]
        diff.append(f"spec.replicas ({handover}) handed over to the HorizontalPodAutoscaler")
    if not diff:
        return Item(obj, Change(SYSTEM_NAME, "unchanged", t), live, patch=patch)
    return Item(obj, Change(SYSTEM_NAME, "update", t, "; ".join(diff)), live, patch=patch,
                handover=handover)


_OPERATOR_KINDS = ("ServiceMonitor", "PrometheusRule")


def _require_api(kube: Kube, obj: dict[str, Any]) -> None:
    """A kind that comes with a CRD (the Prometheus Operator's) is served, else a clear error
    at plan time, before any write (a read of a missing kind is only "not there")."""
    ns = obj["metadata"].get("namespace")
    with call(kube, f"list {obj['kind']} in {ns}"):
        try:
            next(iter(kube.client.list(resource_of(obj), namespace=ns, chunk_size=1)), None)
        except httpx2.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
            raise KubernetesError(
                f"the cluster does not serve {obj['apiVersion']} {obj['kind']} "
                f"(kubernetes.monitoring wants {target(obj)})",
                hint="Install the Prometheus Operator's CRDs (kube-prometheus-stack and the "
                     "operator's bundle bring them), or turn kubernetes.monitoring off.",
            ) from None


def _replicas_to_hand_over(obj: dict[str, Any], live: dict[str, Any]) -> int | None:
    """The live replica count, when our manager still owns `replicas` but no longer sends it
    (autoscaling was turned on); else None."""
    if obj["kind"] != "Deployment" or "replicas" in obj.get("spec", {}):
        return None
    for entry in live["metadata"].get("managedFields") or []:
        if entry.get("manager") == lb.FIELD_MANAGER and entry.get("operation") == "Apply" \
                and "f:replicas" in (entry.get("fieldsV1") or {}).get("f:spec", {}):
            return int(live.get("spec", {}).get("replicas", 1))
    return None


def _kept_item(kube: Kube, need: SecretNeeded) -> Item:
    stub = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": need.name, "namespace": need.namespace}}
    if need.existing is not None:
        return _existing_item(kube, stub, need.existing)
    t = target(stub)
    if get_live(kube, stub) is not None:
        return Item(stub, Change(SYSTEM_NAME, "unchanged", t, "kept as it is (values not known "
                                 f"here: {', '.join(need.missing)})"))
    return Item(stub, Change(SYSTEM_NAME, "create", t, f"needs {', '.join(need.missing)}: "
                             f"{need.how}"), needs_values=True)


def _existing_item(kube: Kube, stub: dict[str, Any], existing: ExistingSecret) -> Item:
    """A Secret the cluster already has: checked, never written (a blocked step when it or a
    key is missing: apply refuses before writing anything, as pods could not start)."""
    t = target(stub)
    live = get_live(kube, stub)
    problems = existing.problems(None if live is None else live.get("data") or {})
    if problems:
        action: Action = "create" if live is None else "update"
        return Item(stub, Change(SYSTEM_NAME, action, t, "; ".join(problems)),
                    needs_values=True, existing=True)
    keys = ", ".join(u.key for u in existing.keys)
    return Item(stub, Change(SYSTEM_NAME, "unchanged", t, f"existing Secret ({existing.field}) "
                             f"with {keys}: referred to, not managed"), existing=True)


def _selector(settings: Settings) -> dict[str, Any]:
    return {"app.kubernetes.io/managed-by": lb.MANAGED_BY,
            "app.kubernetes.io/instance": settings.kubernetes.namespace}


def _list_owned(kube: Kube, settings: Settings, ns: str, res: Any) -> list[dict[str, Any]]:
    with call(kube, f"list {res.__name__} in {ns}"):
        info = api_info(res).resource
        version = f"{info.group}/{info.version}" if info.group else info.version
        try:
            # List items come without kind/apiVersion: put them back. Objects a controller
            # owns (the gc CronJob's Jobs carry its labels) go with their owner, never alone.
            listed = [{**as_dict(o), "apiVersion": version, "kind": info.kind}
                      for o in kube.client.list(res, namespace=ns, labels=_selector(settings))]
            return [o for o in listed if not any(
                r.get("controller") for r in o["metadata"].get("ownerReferences") or ())]
        except ApiError as exc:
            # An installer role from before kubernetes.monitoring may not list these: with
            # monitoring off there is then nothing of ours to find (it could not create any).
            if exc.status.code == 403 and res in (ServiceMonitor, PrometheusRule) \
                    and not settings.kubernetes.monitoring.enabled:
                return []
            if exc.status.code != 404:
                raise
            return []
        except httpx2.HTTPStatusError as exc:  # ApiError, or a 404 without a Status
            if exc.response.status_code != 404:  # 404: e.g. no Gateway API CRDs
                raise
            return []


def owned(kube: Kube, settings: Settings) -> list[dict[str, Any]]:
    """Objects carrying this installation's labels (in its namespace and code-server's)."""
    # In code-server's namespace we only ever create a Secret and a ConfigMap.
    where: dict[str, tuple[Any, ...]] = {settings.kubernetes.namespace: _PRUNABLE}
    d = settings.discovery
    if d.enabled and d.code_server:
        where.setdefault(d.code_server_namespace, (Secret, ConfigMap))
    m = settings.kubernetes.monitoring  # its objects may live in Prometheus's namespace
    for ns in sorted({ns for ns in (m.service_monitor.namespace, m.alerts.namespace)
                      if ns and ns != settings.kubernetes.namespace}):
        where[ns] = (*where.get(ns, ()), ServiceMonitor, PrometheusRule)
    lists = [(ns, res) for ns, kinds in where.items() for res in kinds]
    found = _read_all(lambda nr: _list_owned(kube, settings, *nr), lists)
    objects = [obj for objects in found for obj in objects]
    # A config that dropped its monitoring section no longer names the namespace its
    # ServiceMonitor went to: look in every namespace when allowed to (a namespaced installer
    # role is not; it finds them where the config names them).
    seen = {_key(obj) for obj in objects}
    for res in (ServiceMonitor, PrometheusRule):
        objects += [obj for obj in _list_anywhere(kube, settings, res) if _key(obj) not in seen]
    return objects


def _list_anywhere(kube: Kube, settings: Settings, res: Any) -> list[dict[str, Any]]:
    """Our objects of this kind in all namespaces; none when that is refused or not served."""
    info = api_info(res).resource
    try:
        return [{**as_dict(o), "apiVersion": f"{info.group}/{info.version}", "kind": info.kind}
                for o in kube.client.list(res, namespace="*", labels=_selector(settings))]
    except httpx2.HTTPStatusError as exc:  # ApiError too
        if exc.response.status_code in (403, 404):
            return []
        raise


T = TypeVar("T")
R = TypeVar("R")


def _read_all(read: Callable[[T], R], what: Sequence[T], *, first_alone: bool = True
              ) -> list[R]:
    """`read` of each, `_READERS` at a time (one request each costs a round trip; the API
    server answers them in parallel). Results in `what`'s order; the first failure in that
    order is raised. Reads only: nothing here may write.

    The first one runs alone unless the client made a request already (`first_alone`): a
    kubeconfig's exec plugin is run by the first request that needs credentials, and would be
    run by each of several at once."""
    done = [read(w) for w in what[:1 if first_alone else 0]]
    rest = what[len(done):]
    if len(rest) < 2:
        return [*done, *(read(w) for w in rest)]
    with ThreadPoolExecutor(max_workers=min(_READERS, len(rest)),
                            thread_name_prefix="mlflow-stack-kube") as pool:
        return [*done, *pool.map(read, rest)]


def _key(obj: dict[str, Any]) -> tuple[str, str, str | None]:
    meta = obj["metadata"]
    return obj["kind"], meta["name"], meta.get("namespace")


def _plan_items(kube: Kube, settings: Settings, want: Desired) -> list[Item]:
    reads: list[Callable[[], Item]] = []  # in apply order
    kept = [functools.partial(_kept_item, kube, need) for need in want.kept]
    for obj in want.objects:
        if kept and obj["kind"] not in ("Namespace", "Secret"):
            reads += kept
            kept = []
        reads.append(functools.partial(_observe, kube, obj))
    reads += kept
    for patch in want.patches:
        reads.append(functools.partial(_observe, kube, {**patch.body, "kind": patch.kind},
                                       patch=True))
    # The objects are read (and dry-run) a few at a time, the labelled ones listed alongside,
    # once the first read has the credentials (see _read_all).
    first = reads[0]()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-stack-kube") as pool:
        listing = pool.submit(owned, kube, settings)
        items = [first, *_read_all(lambda read: read(), reads[1:], first_alone=False)]
        listed = listing.result()
    wanted = {_key(i.obj) for i in items}
    for obj in listed:
        if _key(obj) not in wanted and obj["kind"] not in _KEEP:
            items.append(Item(obj, Change(SYSTEM_NAME, "delete", target(obj),
                                          "no longer part of the configuration"), obj))
    return items


# --------------------------------------------------------------------------------------------
# the system


@dataclass(frozen=True)
class Observed:
    want: Desired
    items: list[Item]  # in apply order, each with what apply would do to it

    @property
    def notes(self) -> list[str]:
        return self.want.notes


_BLOCKED_HINT = ("Secrets are read from the environment or ~/.env; or create the Secret "
                 "yourself and apply again.")


_EXISTING_HINT = ("mlflow-stack never creates or changes a Secret named in "
                  "kubernetes.existing_secrets: create it with those keys (or fix its "
                  "ExternalSecret / SealedSecret), or name another Secret or key.")


@dataclass(frozen=True)
class KubernetesSystem:
    """The platform's objects in the cluster (server-side apply, field manager mlflow-stack)."""

    job_timeout: float = JOB_TIMEOUT
    rollout_timeout: float | None = None  # None: from the config (see rollout_timeout())
    name: str = SYSTEM_NAME

    def where(self, settings: Settings) -> str:
        return describe(settings)

    def connect(self, settings: Settings) -> Kube:
        return connect(settings)

    def observe(self, client: Kube, settings: Settings) -> Observed:
        want = desired(client, settings)
        return Observed(want, _plan_items(client, settings, want))

    def plan(self, client: Kube, settings: Settings, observed: Observed) -> list[Step]:
        rollout = self.rollout_timeout or rollout_timeout(settings)
        return [self._step(client, item, rollout) for item in observed.items]

    def _step(self, kube: Kube, item: Item, rollout: float) -> Step:
        obj, change = item.obj, item.change
        if item.needs_values:
            return Step(change, blocked=_EXISTING_HINT if item.existing else _BLOCKED_HINT)
        run = None
        if change.is_change:
            def run(progress: Progress, item: Item = item) -> None:
                _write(kube, item)
        settle = None
        # Wait even when unchanged: an interrupted run may have left them unfinished. What
        # observe read is still what is there when nothing was written to it.
        seen = None if change.is_change else item.live
        if obj["kind"] == "Job" and change.action != "delete":
            def settle(progress: Progress) -> None:
                _wait_job(kube, obj, progress, self.job_timeout, seen)
        elif obj["kind"] == "Deployment" and not item.patch and change.action != "delete":
            def settle(progress: Progress) -> None:
                _wait_rollout(kube, obj, progress, rollout, seen)
        return Step(change, run, destructive=change.action == "delete" or item.recreate,
                    settle=settle)

    def teardown(self, client: Kube, settings: Settings, *, purge: bool) -> list[Step]:
        return _teardown(client, settings, purge=purge)

    def check(self, settings: Settings) -> list[Finding]:
        name = "Kubernetes objects"
        try:
            observed = self.observe(self.connect(settings), settings)
        except StackError as exc:
            return [problem(name, exc.message, exc.hint or "mlflow-stack plan shows the cause")]
        pending = [i.change for i in observed.items if i.change.is_change]
        if pending:
            listed = "; ".join(f"{c.action} {c.target}" for c in pending[:6])
            return [problem(name, f"{len(pending)} difference(s) from the config: {listed}",
                            "mlflow-stack apply repairs them (mlflow-stack plan shows them)")]
        return [ok(name, f"every object in {describe(settings)} matches the config")]


SYSTEM = KubernetesSystem()


def apply_objects(settings: Settings, progress: Progress | None = None, *,
                  job_timeout: float = JOB_TIMEOUT,
                  rollout_timeout_s: float | None = None) -> Report:
    """Make the cluster match the (resolved) config and report how many writes it took.
    Idempotent; safe to re-run after an interruption."""
    progress = progress or NullProgress()
    system = KubernetesSystem(job_timeout, rollout_timeout_s)
    kube = system.connect(settings)
    with progress.step(f"kubernetes: read {describe(settings)} at {kube.url}"):
        observed = system.observe(kube, settings)
    for note in observed.want.notes:
        progress.detail(note)
    changes = run_steps(SYSTEM_NAME, system.plan(kube, settings, observed), progress)
    writes = sum(2 if i.recreate or i.handover is not None else 1
                 for i in observed.items if i.change.is_change)
    return Report(changes, writes, tracking_uri(settings), observed.want.notes)


def _write(kube: Kube, item: Item) -> int:
    obj, t = item.obj, item.change.target
    meta = obj["metadata"]
    if item.change.action == "delete":
        _delete(kube, obj)
        return 1
    with call(kube, f"apply {t}"):
        if item.recreate:
            kube.client.delete(resource_of(obj), meta["name"], namespace=meta.get("namespace"),
                               cascade=CascadeType.BACKGROUND)
            _ssa(kube, obj, dry_run=False)
            return 2
        if item.handover is not None:
            # Another manager takes the field at its current value first, so our apply without
            # it releases it instead of resetting it; the HPA owns it from its next scaling.
            stub = {"apiVersion": obj["apiVersion"], "kind": obj["kind"],
                    "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
                    "spec": {"replicas": item.handover}}
            kube.client.patch(resource_of(obj), meta["name"], stub,
                              namespace=meta.get("namespace"), patch_type=PatchType.APPLY,
                              field_manager=HANDOVER_MANAGER, force=True)
        _ssa(kube, obj, dry_run=False)
    return 1


def _delete(kube: Kube, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    with call(kube, f"delete {target(obj)}"):
        try:
            # Background: foreground deletion waits on the garbage collector.
            kube.client.delete(resource_of(obj), meta["name"], namespace=meta.get("namespace"),
                               cascade=CascadeType.BACKGROUND)
        except ApiError as exc:
            if exc.status.code != 404:
                raise


def _wait_job(kube: Kube, obj: dict[str, Any], progress: Progress, timeout: float,
              seen: dict[str, Any] | None = None) -> None:
    """Wait for the migration Job; `seen`: the Job as observe read it (None: read it now)."""
    meta = obj["metadata"]
    live = seen if seen is not None else _get(kube, Job, meta["name"], meta["namespace"])
    if live is not None and job_state(Job.from_dict(live)) == "complete":
        return
    with progress.step(f"kubernetes: migration Job {meta['name']} (schema upgrade)"):
        wait_job(kube, meta["namespace"], meta["name"], progress, timeout)


def _wait_rollout(kube: Kube, obj: dict[str, Any], progress: Progress, timeout: float,
                  seen: dict[str, Any] | None = None) -> None:
    """Wait for the rollout; `seen`: the Deployment as observe read it (None: read it now)."""
    meta = obj["metadata"]
    live = seen if seen is not None else _get(kube, Deployment, meta["name"], meta["namespace"])
    if live is not None and rollout_state(Deployment.from_dict(live))[0]:
        return
    with progress.step(f"kubernetes: rollout of Deployment {meta['namespace']}/{meta['name']}"):
        wait_rollout(kube, meta["namespace"], meta["name"], progress, timeout)


# --------------------------------------------------------------------------------------------
# uninstall


def _ours(live: dict[str, Any]) -> bool:
    managers = live["metadata"].get("managedFields") or []
    return any(m.get("manager") == lb.FIELD_MANAGER for m in managers)


def _teardown(kube: Kube, settings: Settings, *, purge: bool) -> list[Step]:
    """Remove what apply created, in reverse order. PVCs and the namespace stay unless `purge`.

    Only objects this tool applied (its field manager is on them) are deleted; a Secret the
    user created under one of our names is left. The code-server Deployment is not deleted:
    only the env and mounts we added to it are removed (an apply of nothing by our manager).
    """
    rendered = render(settings)
    candidates: list[dict[str, Any]] = list(rendered.objects)
    last_secret = max(i for i, o in enumerate(candidates) if o["kind"] in ("Namespace", "Secret"))
    stubs = {n: {"apiVersion": "v1", "kind": "Secret",
                 "metadata": {"name": n.name, "namespace": n.namespace}}
             for n in rendered.secrets_needed}
    # Existing Secrets (kubernetes.existing_secrets) are someone else's: never removed, even
    # when they carry our labels from before the config named them.
    candidates[last_secret + 1:last_secret + 1] = [
        stub for n, stub in stubs.items() if n.existing is None]
    known = {_key(o) for o in [*candidates, *stubs.values()]}
    stale = [o for o in owned(kube, settings) if _key(o) not in known]
    steps: list[Step] = []
    for patch in rendered.patches:
        steps += _unpatch(kube, patch)
    for obj in [*stale, *reversed(candidates)]:
        live = get_live(kube, obj)
        t = target(obj)
        if live is None:
            continue
        if not _ours(live):
            steps.append(Step(Change(SYSTEM_NAME, "unchanged", t,
                                     "not applied by mlflow-stack: left")))
            continue
        if _shared(obj):
            steps.append(Step(Change(SYSTEM_NAME, "unchanged", t,
                                     "kept (shared models volume other platform parts use)")))
            continue
        if obj["kind"] in _KEEP and not purge:
            what = "data" if obj["kind"] == "PersistentVolumeClaim" else "namespace"
            steps.append(Step(Change(SYSTEM_NAME, "unchanged", t,
                                     f"kept ({what}; --purge deletes it)")))
            continue
        detail = "its remaining contents go with it (Terminating until then)" \
            if obj["kind"] == "Namespace" else ""

        def delete(progress: Progress, obj: dict[str, Any] = obj) -> None:
            _delete(kube, obj)
        steps.append(Step(Change(SYSTEM_NAME, "delete", t, detail), delete, destructive=True))
    return steps


def _shared(obj: dict[str, Any]) -> bool:
    """The reference's shared models volume: other platform parts mount it, so even --purge
    keeps it (delete it by hand if nothing else uses it)."""
    labels = obj.get("metadata", {}).get("labels", {})
    return obj["kind"] == "PersistentVolumeClaim" and all(
        labels.get(k) == v for k, v in lb.MODELS_PVC_LABELS.items())


def _unpatch(kube: Kube, patch: Patch) -> list[Step]:
    stub = {"apiVersion": patch.api_version, "kind": patch.kind,
            "metadata": {"name": patch.name, "namespace": patch.namespace}}
    live = get_live(kube, stub)
    if live is None or not _ours(live):
        return []
    t = target(stub)

    def release(progress: Progress) -> None:
        # Applying an empty intent releases every field we own; the server removes those no
        # other manager also set.
        with call(kube, f"apply {t}"):
            _ssa(kube, stub, dry_run=False)
    return [Step(Change(SYSTEM_NAME, "delete", t, "the MLflow env and helper mounts we added"),
                 release, destructive=True)]
