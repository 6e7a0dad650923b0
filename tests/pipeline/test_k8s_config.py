"""The Kubernetes scale-out config, validated with Dagster's own tooling (dagster-k8s): the instance file's
run launcher and compute-log sections pass their config schemas, and the launcher builds one Kubernetes Job
(one pod) per partition run with the pipeline's environment and memory budget."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"

dagster_k8s = pytest.importorskip("dagster_k8s", reason="dagster-k8s (pinned in pyproject) is not installed")

KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
users: [{name: u, user: {token: unused}}]
"""


def test_k8s_instance_config_builds_one_job_per_partition_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config
    from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id

    monkeypatch.setenv("DEPTH_PIPELINE_IMAGE", "registry.example/depth:1")
    monkeypatch.setenv("DEPTH_LOG_BUCKET", "logs")
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(K8S / "dagster-instance.yaml", home / "dagster.yaml")
    instance_config, _ = dagster_instance_config(str(home))  # the instance schema as a whole
    assert instance_config["run_launcher"]["class"] == "K8sRunLauncher"

    launcher_config = process_config(K8sRunLauncher.config_type(), instance_config["run_launcher"]["config"])
    assert launcher_config.success, launcher_config.errors
    logs_config = process_config(S3ComputeLogManager.config_type(), instance_config["compute_logs"]["config"])
    assert logs_config.success, logs_config.errors

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)  # parsed only; nothing connects
    settings: dict[str, Any] = {
        **dict(launcher_config.value or {}),
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    launcher = K8sRunLauncher(**settings)
    jobs = []
    for symbol in ("BTCUSDT", "ETHUSDT"):  # two date runs
        run = dg.DagsterRun(
            job_name="depth_daily",
            run_id=f"{symbol.lower()}-0000-0000-0000-000000000000",
            tags={"dagster/partition": f"2026-11-2{4 if symbol == 'BTCUSDT' else 5}"},
        )
        context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
        job_config = context.get_k8s_job_config(job_image=None, run_launcher=launcher)
        jobs.append(
            construct_dagster_k8s_job(
                job_config,
                ["dagster", "api", "execute_run"],
                get_job_name_from_run_id(run.run_id),
                user_defined_k8s_config=context.run_k8s_config,
                pod_name=f"run-{symbol.lower()}",
                component="run_worker",
            )
        )
    assert len({j.metadata.name for j in jobs}) == 2  # one Job (one pod) per partition run
    container = jobs[0].spec.template.spec.containers[0]
    assert container.image == "registry.example/depth:1"
    assert container.resources.requests == {"cpu": "500m", "memory": "1Gi"}  # the run worker of a date
    assert container.resources.limits == {"memory": "2Gi"}
    assert {e.config_map_ref.name for e in container.env_from if e.config_map_ref} == {"depth-pipeline-env"}
    assert jobs[0].spec.backoff_limit == 0


def test_helm_values_match_the_instance_config() -> None:
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    instance = yaml.safe_load((K8S / "dagster-instance.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert values["runLauncher"]["type"] == instance["run_launcher"]["class"]
    assert (
        launcher["runK8sConfig"]["containerConfig"]["resources"]
        == (instance["run_launcher"]["config"]["run_k8s_config"]["container_config"]["resources"])
    )
    assert values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"] == [
        "--module-name",
        "depth_pipeline.definitions",
    ]
    env = yaml.safe_load((K8S / "config-env.yaml").read_text())["data"]
    assert {"DEPTH_STORE_URL", "DEPTH_STREAMS", "DEPTH_SYMBOLS", "DEPTH_MARKET", "DEPTH_EXECUTOR"} <= set(env)
    limits = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"][
        "tagConcurrencyLimits"
    ]
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
        instance["concurrency"]["runs"]["tag_concurrency_limits"]
    )


def test_k8s_executor_runs_each_step_as_a_pod_with_the_step_requests(tmp_path: Path) -> None:
    """With deploy/k8s/config-env.yaml's environment the daily job runs on dagster-k8s's k8s_job_executor
    (a pod per step: a stream-day validation, a batch of merges) with the step pods' requests."""
    from depth_pipeline.config import PipelineConfig
    from depth_pipeline.definitions import build_definitions

    env = yaml.safe_load((K8S / "config-env.yaml").read_text())["data"]
    env = {k: str(v) for k, v in env.items() if k.startswith("DEPTH_")}
    env["DEPTH_STORE_URL"] = str(tmp_path / "store")  # the code location reads one marker object at load
    config = PipelineConfig.from_env(env)
    job = build_definitions(config).resolve_job_def("depth_daily")
    assert job.executor_def.name == "depth_k8s_executor"
    resolved = job.executor_def.config_schema.resolve_config({})
    assert resolved.success, resolved.errors
    step = resolved.value["config"]  # type: ignore[index]
    assert step["max_concurrent"] == int(env["DEPTH_MAX_PARALLEL_STEPS"])
    assert step["step_k8s_config"]["container_config"]["resources"] == {
        "requests": {"cpu": env["DEPTH_STEP_CPU"], "memory": env["DEPTH_STEP_MEMORY"]},
        "limits": {"memory": env["DEPTH_STEP_MEMORY_LIMIT"]},
    }
    dockerfile = (K8S / "Dockerfile").read_text()
    assert "python -m depth_pipeline.warm" in dockerfile and "NUMBA_CACHE_DIR" in dockerfile
