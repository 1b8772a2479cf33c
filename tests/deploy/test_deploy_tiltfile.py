"""The Tiltfile run by a real Starlark interpreter, Tilt's functions stubbed to record calls."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import starlark
import yaml

from tests.deploy.manifests import REPO, SERVICES, Manifest, load_documents, of_kind

TILTFILE = REPO / "Tiltfile"


@dataclass
class Call:
    """One call the Tiltfile made to a Tilt builtin."""

    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class TiltRecorder:
    """Tilt's API as recording stubs; `helm()` really renders the chart with helm's library."""

    calls: list[Call] = field(default_factory=list)
    rendered: list[Manifest] = field(default_factory=list)

    def stub(self, function: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(Call(function, args, kwargs))
            return {"tilt": function, "args": list(args), "kwargs": kwargs}

        return record

    def helm(self, chart: str, **kwargs: Any) -> str:
        self.calls.append(Call("helm", (chart,), kwargs))
        values: dict[str, Any] = {}
        for path in kwargs.get("values", []):
            values = merge(values, yaml.safe_load((REPO / path).read_text()))
        for assignment in kwargs.get("set", []):
            values = merge(values, helm.parse_set_string(assignment))
        with helm.Chart.load(REPO / chart) as loaded:
            manifests = loaded.render(
                values, name=kwargs["name"], namespace=kwargs.get("namespace")
            )
        self.rendered = [
            obj
            for path, text in manifests.items()
            if path.endswith(".yaml")
            for obj in load_documents(text)
        ]
        return "<helm yaml>"

    def named(self, function: str) -> list[Call]:
        return [call for call in self.calls if call.function == function]


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(scope="module")
def tilt() -> TiltRecorder:
    recorder = TiltRecorder()
    module = starlark.Module()
    builtins = ("docker_build", "k8s_yaml", "k8s_resource", "local_resource", "sync", "run",
                "fall_back_on", "restart_container", "port_forward", "watch_file")  # fmt: skip
    for name in builtins:
        module.add_callable(name, recorder.stub(name))
    module.add_callable("helm", recorder.helm)
    module["TRIGGER_MODE_MANUAL"] = "manual"
    module["TRIGGER_MODE_AUTO"] = "auto"

    def load_extension(name: str) -> starlark.FrozenModule:
        # Tilt's extensions: only restart_process is used, stubbed like the builtins.
        assert name == "ext://restart_process", name
        extension = starlark.Module()
        extension.add_callable(
            "docker_build_with_restart", recorder.stub("docker_build_with_restart")
        )
        return extension.freeze()

    ast = starlark.parse("Tiltfile", TILTFILE.read_text(), starlark.Dialect.extended())
    globals_ = starlark.Globals.extended_by([starlark.LibraryExtension.Print])
    starlark.eval(module, ast, globals_, starlark.FileLoader(load_extension))
    return recorder


def image_build(tilt: TiltRecorder) -> Call:
    (build,) = tilt.named("docker_build") + tilt.named("docker_build_with_restart")
    return build


def test_tiltfile_declares_a_resource_for_each_of_the_five_services(tilt: TiltRecorder) -> None:
    resources = {call.kwargs["new_name"]: call.kwargs for call in tilt.named("k8s_resource")}
    assert set(SERVICES) <= set(resources)
    workloads = {
        obj["metadata"]["name"]
        for obj in tilt.rendered
        if obj["kind"] in ("Deployment", "StatefulSet")
    }
    for name, resource in resources.items():
        assert resource["workload"] in workloads, f"{name}: no workload {resource['workload']}"
    for service in SERVICES:
        assert "redis" in resources[service]["resource_deps"], service
    assert "redis" in resources


def test_gateway_and_ingest_are_port_forwarded_to_their_container_ports(tilt: TiltRecorder) -> None:
    resources = {call.kwargs["new_name"]: call.kwargs for call in tilt.named("k8s_resource")}
    deployments = {obj["metadata"]["name"]: obj for obj in of_kind(tilt.rendered, "Deployment")}
    for service in ("gateway", "ingest"):
        (forward,) = resources[service]["port_forwards"]
        local, remote = (int(part) for part in forward.split(":"))
        pod = deployments[resources[service]["workload"]]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert remote in {port["containerPort"] for port in container["ports"]}
        assert local > 0


def test_helm_release_uses_dev_values_with_the_bundled_redis_and_the_built_image(
    tilt: TiltRecorder,
) -> None:
    (helm_call,) = tilt.named("helm")
    assert (REPO / helm_call.args[0] / "Chart.yaml").exists()
    assert len(tilt.named("k8s_yaml")) == 1
    assert of_kind(tilt.rendered, "StatefulSet"), "development runs the chart's own Redis"
    build = image_build(tilt)
    images = {
        container["image"]
        for obj in of_kind(tilt.rendered, "Deployment")
        for container in obj["spec"]["template"]["spec"]["containers"]
    }
    # Tilt swaps in its build only where the chart names the same image.
    assert {image.split(":")[0] for image in images} == {build.args[0]}


def test_image_build_targets_the_dev_stage_and_restarts_tocsin_after_a_sync(
    tilt: TiltRecorder,
) -> None:
    build = image_build(tilt)
    target = build.kwargs["target"]
    dockerfile = (REPO / build.kwargs.get("dockerfile", "Dockerfile")).read_text()
    assert re.search(rf"^FROM \S+ AS {target}$", dockerfile, re.MULTILINE)
    if build.function == "docker_build_with_restart":
        assert build.kwargs["entrypoint"] == ["tocsin"]
    else:
        assert any(step["tilt"] == "restart_container" for step in build.kwargs["live_update"])


def test_every_synced_and_watched_path_exists(tilt: TiltRecorder) -> None:
    build = image_build(tilt)
    steps = build.kwargs["live_update"]
    syncs = [step["args"] for step in steps if step["tilt"] == "sync"]
    assert {Path(local).name for local, _ in syncs} == {"libs", "services"}
    for local, remote in syncs:
        assert (REPO / local).is_dir(), local
        assert remote == f"/app/{local}", "the dev stage installs the sources editable under /app"
    for step in steps:
        if step["tilt"] == "fall_back_on":
            for path in step["args"][0]:
                assert (REPO / path).exists(), path
    for path in build.kwargs.get("only", []):
        assert (REPO / path).exists(), path
    (tests,) = tilt.named("local_resource")
    assert "make test" in tests.kwargs["cmd"]
    for path in tests.kwargs["deps"]:
        assert (REPO / path).exists(), path
