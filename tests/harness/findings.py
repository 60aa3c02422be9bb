"""Assertions on `doctor` findings shared by the local and the cluster doctor tests."""

from __future__ import annotations

from mlflow_stack.ops.doctor.findings import Finding

KUBERNETES_OBJECTS = "Kubernetes objects"  # components.kubernetes SYSTEM.check


def assert_problem(findings: dict[str, Finding], check: str, finding: str,
                   fix: str) -> Finding:
    """`check` is a problem naming `finding` with `fix`, and no other check is a problem (the
    Kubernetes objects' drift aside: a deleted or edited object is drift too, and says so)."""
    f = findings[check]
    assert f.status == "problem", f
    assert finding in f.finding, f
    assert fix in f.fix, f
    others = [g for g in findings.values() if g.status == "problem"
              and g.check not in (check, KUBERNETES_OBJECTS)]
    assert not others, f"only {check} should fail, also: {others}"
    return f
