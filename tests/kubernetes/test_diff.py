"""The field-level diff `plan` prints: paths by name, bookkeeping ignored, no Secret values."""

from __future__ import annotations

from mlflow_stack.kubernetes.diff import field_diff


def _deployment(replicas: int, env: list[dict[str, str]], **meta: object) -> dict[str, object]:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "mlflow", "namespace": "ns", **meta},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "mlflow", "env": env}]}}},
            "status": {"readyReplicas": 1}}


def test_named_list_items_and_ignored_bookkeeping() -> None:
    live = _deployment(3, [{"name": "A", "value": "1"}], resourceVersion="7", uid="u",
                       managedFields=[{"manager": "x"}], generation=4)
    want = _deployment(1, [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                       resourceVersion="8", generation=5)
    want["status"] = {}
    assert field_diff(live, want) == [
        "spec.replicas: 3 -> 1",
        "+ spec.template.spec.containers[mlflow].env[B].name = B",
        "+ spec.template.spec.containers[mlflow].env[B].value = 2",
    ]
    assert field_diff(live, {**live, "status": {"readyReplicas": 0}}) == []


def test_secret_values_never_appear() -> None:
    live = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "b2xk", "gone": "eA=="}}
    want = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "bmV3", "new": "eQ=="}}
    lines = field_diff(live, want)
    assert lines == ["- data.gone", "data.k: changed", "+ data.new"]
    assert not any(v in " ".join(lines) for v in ("b2xk", "bmV3", "eQ==", "eA=="))
