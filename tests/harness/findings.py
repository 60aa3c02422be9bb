"""Assertions on `doctor` findings shared by the local and the cluster doctor tests."""

from __future__ import annotations

from mlflow_stack.ops.doctor.findings import Finding


def assert_problem(findings: dict[str, Finding], check: str, finding: str,
                   fix: str) -> Finding:
    """`check` is a problem naming `finding` with `fix`, and no other check is a problem."""
    f = findings[check]
    assert f.status == "problem", f
    assert finding in f.finding, f
    assert fix in f.fix, f
    others = [g for g in findings.values() if g.status == "problem" and g.check != check]
    assert not others, f"only {check} should fail, also: {others}"
    return f
