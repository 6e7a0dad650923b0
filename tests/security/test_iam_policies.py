"""The least-privilege IAM examples in deploy/iam/ parse, and grant each role exactly what it needs.

A small evaluator applies IAM's rules that these policies use (explicit Deny wins, Allow needed,
``*``/``?`` wildcards in actions and resources, ``StringLike`` on ``s3:prefix``) to concrete requests.
"""

from __future__ import annotations

import fnmatch
import json
from pathlib import Path
from typing import Any

import pytest

IAM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "iam"
BUCKET = "example-depth-bucket"
PREFIX = "depth"
KMS_KEY = "arn:aws:kms:eu-west-1:111122223333:key/EXAMPLE-KEY-ID"


def load(name: str) -> dict[str, Any]:
    policy = json.loads((IAM_DIR / name).read_text())
    assert policy["Version"] == "2012-10-17"
    assert isinstance(policy["Statement"], list) and policy["Statement"]
    return policy


def _as_list(v: str | list[str]) -> list[str]:
    return [v] if isinstance(v, str) else list(v)


def _matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def _condition_holds(cond: dict[str, Any] | None, context: dict[str, str]) -> bool:
    if not cond:
        return True
    for op, tests in cond.items():
        if op != "StringLike":
            raise AssertionError(f"evaluator does not know condition operator {op}")
        for key, patterns in tests.items():
            if key not in context or not any(_matches(p, context[key]) for p in _as_list(patterns)):
                return False
    return True


def allowed(
    policy: dict[str, Any], action: str, resource: str, context: dict[str, str] | None = None
) -> bool:
    ctx = context or {}
    allow = False
    for st in policy["Statement"]:
        if not any(_matches(a, action) for a in _as_list(st["Action"])):
            continue
        if not any(_matches(r, resource) for r in _as_list(st["Resource"])):
            continue
        if not _condition_holds(st.get("Condition"), ctx):
            continue
        if st["Effect"] == "Deny":
            return False
        allow = True
    return allow


def obj(key: str) -> str:
    return f"arn:aws:s3:::{BUCKET}/{PREFIX}/{key}"


BUCKET_ARN = f"arn:aws:s3:::{BUCKET}"
OWN_RAW = (
    "raw/market=spot/stream=eu-1/symbol=BTCUSDT/date=2026-11-24/0001732406400000000000-abc-00000001.ndjson.gz"
)
OTHER_RAW = (
    "raw/market=spot/stream=ap-1/symbol=BTCUSDT/date=2026-11-24/0001732406400000000000-abc-00000001.ndjson.gz"
)
MERGED = "merged/market=spot/symbol=BTCUSDT/date=2026-11-24/part-00000.parquet"
STATE = "state/market=spot/symbol=BTCUSDT/date=2026-11-24/20261124T010000Z-0a1b2c3d/end_book.parquet"
STAGING = (
    "staging/merged/market=spot/symbol=BTCUSDT/date=2026-11-24/20261124T010000Z-0a1b2c3d/part-00000.parquet"
)
VALIDATED = "validated/market=spot/stream=eu-1/symbol=BTCUSDT/date=2026-11-24/events.parquet"
QUALITY = "quality/market=spot/symbol=BTCUSDT/date=2026-11-24/report.png"


@pytest.mark.parametrize("name", sorted(p.name for p in IAM_DIR.glob("*.json")))
def test_policy_is_valid_and_has_no_blanket_grants(name: str) -> None:
    policy = load(name)
    for st in policy["Statement"]:
        assert st["Effect"] in ("Allow", "Deny")
        assert set(st) <= {"Sid", "Effect", "Action", "Resource", "Condition"}, st
        if st["Effect"] == "Allow":
            for action in _as_list(st["Action"]):
                assert "*" not in action, f"{name}: wildcard action {action} in {st.get('Sid')}"
            for res in _as_list(st["Resource"]):
                assert res not in ("*", f"arn:aws:s3:::{BUCKET}/*"), (
                    f"{name}: blanket resource in {st.get('Sid')}"
                )


def test_collector_writes_only_its_own_raw_prefix() -> None:
    p = load("collector-eu-1.json")
    assert allowed(p, "s3:PutObject", obj(OWN_RAW))
    assert allowed(p, "s3:GetObject", obj(OWN_RAW))  # HeadObject to verify an upload
    assert allowed(p, "s3:AbortMultipartUpload", obj(OWN_RAW))
    assert allowed(p, "s3:ListBucket", BUCKET_ARN)
    assert allowed(p, "kms:GenerateDataKey", KMS_KEY)
    # IAM's * spans "/": markets are spelled out so no crafted key reaches another stream's prefix
    crafted = "raw/market=spot/stream=ap-1/symbol=BTCUSDT/stream=eu-1/x.ndjson.gz"
    for key in (OTHER_RAW, MERGED, STATE, VALIDATED, QUALITY, "raw/market=spot/stream=eu-10/x", crafted):
        assert not allowed(p, "s3:PutObject", obj(key)), key
        assert not allowed(p, "s3:GetObject", obj(key)), key
    for key in (OWN_RAW, OTHER_RAW, MERGED):
        assert not allowed(p, "s3:DeleteObject", obj(key)), key
    assert not allowed(p, "s3:PutBucketPolicy", BUCKET_ARN)


def test_pipeline_reads_and_deletes_raw_and_writes_only_its_outputs() -> None:
    p = load("pipeline.json")
    for key in (OWN_RAW, OTHER_RAW):
        assert allowed(p, "s3:GetObject", obj(key))
        assert allowed(p, "s3:DeleteObject", obj(key))  # the gated cleanup
        assert not allowed(p, "s3:PutObject", obj(key)), "the pipeline must never write raw/"
    for key in (MERGED, STAGING, STATE, VALIDATED, QUALITY):
        assert allowed(p, "s3:PutObject", obj(key)), key
        assert allowed(p, "s3:GetObject", obj(key)), key
        assert allowed(p, "s3:DeleteObject", obj(key)), key  # replacing its own outputs
    assert allowed(p, "s3:ListBucket", BUCKET_ARN)
    assert not allowed(p, "s3:PutObject", f"arn:aws:s3:::{BUCKET}/other/thing")
    assert not allowed(p, "s3:GetObject", f"arn:aws:s3:::other-bucket/{PREFIX}/{MERGED}")
    assert not allowed(p, "s3:DeleteBucket", BUCKET_ARN)


def test_analyst_reads_merged_only() -> None:
    p = load("analyst.json")
    assert allowed(p, "s3:GetObject", obj(MERGED))
    assert allowed(p, "s3:ListBucket", BUCKET_ARN, {"s3:prefix": f"{PREFIX}/merged/market=spot/"})
    assert not allowed(p, "s3:ListBucket", BUCKET_ARN, {"s3:prefix": f"{PREFIX}/raw/"})
    assert not allowed(p, "s3:ListBucket", BUCKET_ARN)  # no prefix: whole bucket
    assert allowed(p, "kms:Decrypt", KMS_KEY)
    assert not allowed(p, "kms:GenerateDataKey", KMS_KEY)
    for key in (OWN_RAW, STATE, VALIDATED):
        assert not allowed(p, "s3:GetObject", obj(key)), key
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert not allowed(p, action, obj(MERGED)), action


def test_evaluator_itself_honours_deny_and_conditions() -> None:
    """The evaluator must be able to say no, or the tests above prove nothing."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
            {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "arn:aws:s3:::b/keep/*"},
            {
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": "arn:aws:s3:::b",
                "Condition": {"StringLike": {"s3:prefix": ["x/*"]}},
            },
        ],
    }
    assert allowed(policy, "s3:DeleteObject", "arn:aws:s3:::b/other/k")
    assert not allowed(policy, "s3:DeleteObject", "arn:aws:s3:::b/keep/k")
    assert allowed(policy, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "x/y"})
    assert not allowed(policy, "s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "z/"})
    assert not allowed(policy, "s3:GetObject", "arn:aws:s3:::c/k")
