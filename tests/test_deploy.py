"""deploy/, checked offline: the FlinkDeployment against the Flink Kubernetes Operator's own
CRD schema (from its API jar, fetched by `make jars`), its job arguments against the job's
flags, and the image definition against what `make setup` installs. Nothing here runs
Kubernetes or Docker."""

from __future__ import annotations

import copy
import re
import shlex
import zipfile

import pytest
import yaml
from jsonschema import Draft7Validator

from infra import paths
from jobs import scoring_job

DEPLOY = paths.ROOT / "deploy"
CRD_FILE = "META-INF/fabric8/flinkdeployments.flink.apache.org-v1.yml"


def crd_schema() -> dict:
    """The FlinkDeployment v1beta1 schema from the operator's API jar. That jar (1.10.0, the
    newest the registry here serves) lists Flink versions up to v1_20: v2_2 is added to the
    enum, the one departure from the operator's schema."""
    jar = next((paths.ROOT / "lib" / "k8s").glob("flink-kubernetes-operator-api-*.jar"))
    crd = yaml.safe_load(zipfile.ZipFile(jar).read(CRD_FILE))
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1beta1")["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["properties"]["flinkVersion"]["enum"].append("v2_2")
    return schema


def undeclared(doc, schema: dict, where: str = "") -> list[str]:
    """Keys the schema does not declare (what `kubectl apply --validate=strict` refuses)."""
    if isinstance(doc, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        found = [f"{where}.{k}" for k in doc if k not in schema["properties"]]
        return found + [e for k, v in doc.items() if k in schema["properties"]
                        for e in undeclared(v, schema["properties"][k], f"{where}.{k}")]
    if isinstance(doc, list) and "items" in schema:
        return [e for i, v in enumerate(doc) for e in undeclared(v, schema["items"], f"{where}[{i}]")]
    return []


def problems(manifest: dict) -> list[str]:
    schema = crd_schema()
    errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in Draft7Validator(schema).iter_errors(manifest)]
    # apiVersion, kind and metadata are every object's, checked by Kubernetes, not the CRD.
    body = {k: v for k, v in manifest.items() if k not in ("apiVersion", "kind", "metadata")}
    return errors + [f"{key}: not in the CRD" for key in undeclared(body, schema)]


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((DEPLOY / "flink-deployment.yaml").read_text())


def test_the_flink_deployment_fits_the_operators_crd(manifest):
    assert manifest["kind"] == "FlinkDeployment" and manifest["apiVersion"] == "flink.apache.org/v1beta1"
    assert problems(manifest) == []


@pytest.mark.parametrize("change, says", [
    (lambda m: m["spec"]["job"].update(upgradeMode="sometimes"), "spec.job.upgradeMode: 'sometimes' is not one of"),
    (lambda m: m["spec"]["job"].update(parallelism="two"), "spec.job.parallelism: 'two' is not of type 'integer'"),
    (lambda m: m["spec"]["job"].update(paralelism=2), ".spec.job.paralelism: not in the CRD"),
    (lambda m: m["spec"]["taskManager"]["podTemplate"]["spec"]["containers"][0].update(port=9249),
     ".spec.taskManager.podTemplate.spec.containers[0].port: not in the CRD"),
])
def test_the_check_catches_what_the_operator_would_refuse(manifest, change, says):
    broken = copy.deepcopy(manifest)
    change(broken)
    assert any(says in p for p in problems(broken)), problems(broken)


def test_the_deployment_runs_the_job_with_flags_it_has_checkpoints_savepoints_and_prometheus(manifest):
    spec = manifest["spec"]
    job, conf = spec["job"], spec["flinkConfiguration"]
    args = job["args"]
    script = args[args.index("-py") + 1]
    assert script == "/opt/scoring/jobs/scoring_job.py"
    parsed = scoring_job.parse_args(args[args.index("-py") + 2:])  # exits on an unknown flag
    assert parsed.kafka_config and parsed.trusted_keys and parsed.models_topic_check == "refuse"
    flink = pinned("apache-flink")
    assert job["jarURI"] == f"local:///opt/flink/opt/flink-python-{flink}.jar"
    assert spec["flinkVersion"] == "v" + "_".join(flink.split(".")[:2])
    assert job["upgradeMode"] == "savepoint" and conf["execution.checkpointing.savepoint-dir"]
    assert conf["execution.checkpointing.dir"] and conf["execution.checkpointing.interval"]
    assert conf["metrics.reporter.prom.factory.class"].endswith("PrometheusReporterFactory")
    ports = spec["taskManager"]["podTemplate"]["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": int(conf["metrics.reporter.prom.port"]), "protocol": "TCP"} in ports


def pinned(package: str) -> str:
    text = (paths.ROOT / "requirements" / "constraints.txt").read_text()
    return re.search(rf"^{re.escape(package)}==(\S+)$", text, re.M | re.I).group(1)


def pip_steps(commands: list[str], substitutions: dict[str, str]) -> list[list[str]]:
    """The pip commands among `commands`, with make's variables (or the image's paths) put
    in, as argument lists."""
    steps = []
    for command in commands:
        for old, new in substitutions.items():
            command = command.replace(old, new)
        words = shlex.split(command)
        if words[:3] == ["PYTHON", "-m", "pip"]:
            steps.append(words[3:])
    return steps


def test_the_image_installs_what_make_setup_installs():
    makefile = (paths.ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*\n((?:\t.*\n)+)", makefile, re.M).group(1)
    make_steps = pip_steps([line.strip() for line in recipe.splitlines()],
                           {"$(PIP)": "PYTHON -m pip", "$(REQS)": "requirements/requirements.in",
                            "$(CONSTRAINTS)": "requirements/constraints.txt"})
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    run = next(block for block in re.findall(r"^RUN (.*?)(?<!\\)\n", dockerfile, re.M | re.S) if " pip " in block)
    image_steps = pip_steps([c.strip() for c in run.replace("\\\n", " ").split("&&")],
                            {"/opt/venv/bin/python": "PYTHON"})
    assert make_steps and image_steps == make_steps

    assert re.search(rf"^FROM flink:{re.escape(pinned('apache-flink'))}-\S*java17$", dockerfile, re.M)
    pom = (paths.ROOT / "jvm" / "pom.xml").read_text()
    assert f"<flink.version>{pinned('apache-flink')}</flink.version>" in pom
    copied = set(re.findall(r"^COPY (\S+)/ ", dockerfile, re.M))
    assert {"lib/flink", "lib/flink-plugins/metrics-prometheus"} <= copied
    assert imported_packages("jobs") <= copied, "the job imports a package the image does not copy"


def imported_packages(package: str, seen: set[str] | None = None) -> set[str]:
    """The project's top-level packages `package` imports, transitively."""
    seen = seen if seen is not None else {package}
    for source in (paths.ROOT / package).rglob("*.py"):
        for found in re.findall(r"^\s*(?:from|import) (\w+)", source.read_text(), re.M):
            if (paths.ROOT / found).is_dir() and found not in seen:
                seen.add(found)
                imported_packages(found, seen)
    return seen

