"""The scoring job end to end: real broker, real MiniCluster, real model store over HTTP."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from contract import scoring_pb2 as pb
from contract.json_records import read_result
from contract.values import to_python
from infra import flink_cluster, paths
from infra.job_harness import (
    RunningJob,
    ScoringSetup,
    describe,
    latest_checkpoint,
    nudge_until_event,
)
from model_store import cli
from model_store.kafka_io import consume
from tests.conftest import load_samples, results_including

pytestmark = pytest.mark.integration

Event = pb.ModelEvent


def outputs_of(result: pb.ScoringResult) -> dict:
    return {k: to_python(v) for k, v in result.outputs.items()}


def assert_outputs_as_expected(results: list[pb.ScoringResult], expected: dict[str, dict]) -> None:
    """Each result's outputs against what its sample's own framework computed for the record
    (`expected`: record id -> outputs)."""
    by_id = {r.record_id: r for r in results}
    for record_id, want in expected.items():
        got = outputs_of(by_id[record_id])
        for name, value in want.items():
            if isinstance(value, str):
                assert got[name] == value
            else:
                np.testing.assert_allclose(np.asarray(got[name], dtype=float), value, rtol=1e-4, atol=1e-5)


def runs(values: list) -> list:
    """Run-length encoding: [1, 1, 2, 2, 1] -> [1, 2, 1]."""
    return [k for k, _ in itertools.groupby(values)]


def mine(results, prefix: str):
    return [r for r in results if r.record_id.startswith(prefix + "-")]


def test_swap_mid_stream_scores_every_record_once_by_one_version(scoring, samples):
    rows = load_samples(samples["wine-pmml"])["inputs"]
    scoring.publish("swap-wine", "swap", "pmml", samples["wine-pmml"] / "model.pmml")
    first = scoring.send_records("swap", rows, prefix="swap-first")
    scoring.wait_for_event(Event.AVAILABLE, "swap", 1)

    sent: list[str] = list(first)
    stop = threading.Event()

    def stream():
        for n in itertools.count():
            if stop.is_set():
                return
            sent.extend(scoring.send_records("swap", rows[:10], prefix=f"swap-{n}"))
            time.sleep(0.05)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        time.sleep(3)
        scoring.publish("swap-wine", "swap", "tensorflow", samples["wine-tf"] / "saved_model")
        scoring.wait_for_event(Event.AVAILABLE, "swap", 2)
        time.sleep(3)
        scoring.rollback("swap-wine", 1)
        time.sleep(6)
    finally:
        stop.set()
        producer.join()

    results = mine(scoring.scores(expected=None, timeout_s=20), "swap")
    deadline = time.monotonic() + 60
    while len(results) < len(sent) and time.monotonic() < deadline:
        results = mine(scoring.scores(expected=None, timeout_s=10), "swap")
    ids = [r.record_id for r in results]
    assert len(ids) == len(set(ids)), "a record was scored twice"
    assert set(ids) == set(sent), f"{len(set(sent) - set(ids))} records lost"
    assert not mine(scoring.dead_letters(timeout_s=3), "swap")
    # Versions per key in output order: v1, then v2 after the swap, then v1 after the rollback.
    assert runs([r.model_version for r in results]) == [1, 2, 1]
    for r in results:  # each result is wholly from the model its version names
        keys = set(r.outputs)
        assert keys == ({"probabilities", "label", "confidence"} if r.model_version == 2
                        else {"probability_0", "probability_1", "probability_2", "predicted_cultivar"})
    events = [e for e in scoring.events() if e.data_type == "swap"]
    unloaded = [e for e in events if e.state == Event.UNLOADED]
    assert unloaded and unloaded[0].stats["usage"] > 0


def test_several_data_types_served_at_once_by_their_own_models(scoring, samples):
    cases = {"multi-wine": ("wine-pmml", "pmml", samples["wine-pmml"] / "model.pmml"),
             "multi-text": ("spam-tf", "tensorflow", samples["spam-tf"] / "saved_model"),
             "multi-image": ("digits-tf", "tensorflow", samples["digits-tf"] / "saved_model")}
    for data_type, (_sample, kind, path) in cases.items():
        # The text model goes inline in the descriptor; the others by location.
        scoring.publish(f"{data_type}-model", data_type, kind, path,
                        inline_max_bytes=10**6 if data_type == "multi-text" else 0)
    expected = {}
    for data_type, (sample, _, _) in cases.items():
        doc = load_samples(samples[sample])
        ids = scoring.send_records(data_type, doc["inputs"], prefix=data_type)
        expected.update(dict(zip(ids, doc["expected"], strict=True)))
    results = [r for data_type in cases for r in results_including(
        scoring, data_type, [i for i in expected if i.startswith(data_type + "-")], timeout_s=180)]
    assert sorted(r.record_id for r in results) == sorted(expected)
    assert all(r.model_name == f"{r.data_type}-model" and r.model_version == 1 for r in results)
    assert_outputs_as_expected(results, expected)


def test_an_onnx_model_scores_as_onnx_runtime_itself_scores_the_same_records(scoring, samples):
    """The whole wine data set, through Kafka and the job, against a plain InferenceSession."""
    import onnxruntime as ort

    from samples.build import wine_data

    X, _ = wine_data()
    path = samples["wine-onnx"] / "model.onnx"
    scoring.publish("onnx-wine-model", "onnx-wine", "onnx", path)
    rows = X.to_dict(orient="records")
    _, nudges = nudge_until_event(scoring, Event.AVAILABLE, "onnx-wine", 1, rows[:1], "onnx-nudge")
    ids = scoring.send_records("onnx-wine", rows, prefix="onnx")
    results = {r.record_id: r for r in results_including(scoring, "onnx-wine", ids, timeout_s=120)}
    assert set(ids) <= set(results), f"{len(set(ids) - set(results))} of {len(ids)} records have no result"

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run(None, {n: X[[n]].to_numpy(np.float32) for n in X.columns})
    for record_id, label, p in zip(ids, labels, probabilities, strict=True):
        r = results[record_id]
        assert (r.model_name, r.model_version) == ("onnx-wine-model", 1)
        got = outputs_of(r)
        assert got["output_label"] == label
        assert [got[f"output_probability_{k}"] for k in p] == pytest.approx(list(p.values()), rel=1e-6, abs=1e-7)


def test_xgboost_and_lightgbm_models_score_as_their_libraries_score_the_same_records(scoring, samples):
    """The whole wine data set through Kafka and the job, each booster beside its own library's
    predict on the same rows (models trained by the libraries, published with the CLI)."""
    import lightgbm as lgb
    import xgboost as xgb

    from samples.build import wine_data

    X, _ = wine_data()
    rows = X.to_dict(orient="records")
    boosters = {"xgboost": (samples["wine-xgboost"] / "model.json",
                            lambda path: xgb.Booster(model_file=str(path)).predict(xgb.DMatrix(X))),
                "lightgbm": (samples["wine-lightgbm"] / "model.txt",
                             lambda path: lgb.Booster(model_file=str(path)).predict(X))}
    sent = {}
    for kind, (path, _) in boosters.items():
        scoring.publish(f"{kind}-wine-model", f"{kind}-wine", kind, path)
        nudge_until_event(scoring, Event.AVAILABLE, f"{kind}-wine", 1, rows[:1], f"{kind}-nudge")
        sent[kind] = scoring.send_records(f"{kind}-wine", rows, prefix=kind)
    for kind, (path, library_predict) in boosters.items():
        results = {r.record_id: r for r in results_including(scoring, f"{kind}-wine", sent[kind], timeout_s=120)}
        assert set(sent[kind]) <= set(results), f"{kind}: {len(set(sent[kind]) - set(results))} records have no result"
        for record_id, p in zip(sent[kind], library_predict(path), strict=True):
            r = results[record_id]
            assert (r.model_name, r.model_version) == (f"{kind}-wine-model", 1)
            got = outputs_of(r)
            assert got["prediction"] == int(p.argmax())
            assert [got[f"probability_{k}"] for k in range(3)] == pytest.approx(list(p), rel=1e-6, abs=1e-7)


def test_bad_records_are_dead_lettered_while_good_ones_flow(scoring, samples):
    rows = load_samples(samples["wine-pmml"])["inputs"]
    scoring.publish("bad-wine", "bad", "pmml", samples["wine-pmml"] / "model.pmml")
    good = scoring.send_records("bad", rows, prefix="bad-good")
    bad_rows = [{k: v for k, v in rows[0].items() if k != "alcohol"},
                {**rows[0], "alcohol": "strong"},
                {**rows[0], "hue": float("inf")}]
    bad = scoring.send_records("bad", bad_rows, prefix="bad-bad")
    scoring.send_raw([b"\x00\x01 definitely not protobuf \xff\xfe", b"\x0a\x05hello"])
    more_good = scoring.send_records("bad", rows, prefix="bad-more")

    results = results_including(scoring, "bad", good + more_good)
    assert sorted(r.record_id for r in results) == sorted(good + more_good)
    letters = scoring.dead_letters(timeout_s=10)
    by_id = {d.record_id: d for d in letters if d.record_id.startswith("bad-bad")}
    assert set(by_id) == set(bad)
    assert "missing input(s) ['alcohol']" in by_id[bad[0]].reason
    assert "'alcohol' is a string" in by_id[bad[1]].reason
    assert "'hue' is inf" in by_id[bad[2]].reason
    assert all(d.model_name == "bad-wine" and d.model_version == 1 for d in by_id.values())
    unparsed = [d for d in letters if d.stage == "parse"]
    assert {d.original for d in unparsed} >= {b"\x00\x01 definitely not protobuf \xff\xfe", b"\x0a\x05hello"}
    assert all(d.reason for d in unparsed)


def test_records_of_a_data_type_nobody_publishes_wait_briefly_then_are_dead_lettered(scoring, samples):
    """Whoever writes the data topic picks the data types: records of one with no descriptor
    wait --hold-unpublished-ms (5 s here) for it, then go to the dead letters with the reason
    and leave no state. Records whose model is published while they wait are scored."""
    rows = load_samples(samples["wine-pmml"])["inputs"]
    orphans = scoring.send_records("orphan", rows[:5], prefix="orphan")
    early = scoring.send_records("early", rows[:5], prefix="early")
    scoring.publish("early-wine", "early", "pmml", samples["wine-pmml"] / "model.pmml")
    scored = results_including(scoring, "early", early)
    assert sorted(r.record_id for r in scored) == sorted(early)
    letters = dead_letters_including(scoring, orphans)
    assert set(letters) == set(orphans)
    assert all(d.stage == "no-model" and "no model has been published" in d.reason
               and "waited 5s" in d.reason for d in letters.values())
    late = scoring.send_records("orphan", rows[:1], prefix="orphan-late")  # its key was freed: waits anew
    assert set(dead_letters_including(scoring, late)) == set(late)


def dead_letters_including(setup: ScoringSetup, ids: list[str], timeout_s: float = 60) -> dict[str, pb.DeadLetter]:
    deadline = time.monotonic() + timeout_s
    letters: dict[str, pb.DeadLetter] = {}
    while set(letters) < set(ids) and time.monotonic() < deadline:
        letters = {d.record_id: d for d in setup.dead_letters(timeout_s=3) if d.record_id in ids}
    return letters


def test_json_records_get_json_results_beside_protobuf_ones(scoring, samples):
    """JSON records written by another client (librdkafka) with plain json.dumps, protobuf
    records and broken JSON, on one topic for one data type: each JSON record's result is
    JSON naming the version, each protobuf record's is protobuf, the broken ones are
    dead-lettered saying what was wrong."""
    from confluent_kafka import Producer

    doc = load_samples(samples["wine-pmml"])
    scoring.publish("json-wine-model", "json-wine", "pmml", samples["wine-pmml"] / "model.pmml")
    nudge_until_event(scoring, Event.AVAILABLE, "json-wine", 1, doc["inputs"][:1], "json-nudge")
    texts = {f"json-{i}": json.dumps({"record_id": f"json-{i}", "data_type": "json-wine", "inputs": row})
             for i, row in enumerate(doc["inputs"])}
    broken = [b'{"record_id": "json-broken", "data_type": "json-wine", "inputs": {"hue": NaN}}',
              b'{"record_id": "json-cut", "data_type": "json-wi']
    producer = Producer({"bootstrap.servers": scoring.bootstrap})
    for value in [*texts.values(), *broken]:
        producer.produce(scoring.topics["data"], value.encode() if isinstance(value, str) else value)
    assert producer.flush(30) == 0
    protobuf_ids = scoring.send_records("json-wine", doc["inputs"], prefix="json-pb")
    results_including(scoring, "json-wine", [*texts, *protobuf_ids], timeout_s=120)

    raw = {read_result(v).record_id: v for v in consume(scoring.bootstrap, scoring.topics["scores"], None, 10)}
    for (record_id, _), expected in zip(texts.items(), doc["expected"], strict=True):
        result = json.loads(raw[record_id])
        assert (result["model_name"], result["model_version"], result["data_type"]) == ("json-wine-model", 1, "json-wine")
        assert result["outputs"] == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert all(raw[i][:1] != b"{" and pb.ScoringResult.FromString(raw[i]).model_version == 1 for i in protobuf_ids)
    reasons = {d.original: d.reason for d in scoring.dead_letters(timeout_s=10) if d.stage == "parse"}
    assert "bad JSON record: NaN is not a JSON number" in reasons[broken[0]]
    assert "bad JSON record: not valid JSON: Unterminated string" in reasons[broken[1]]


def test_half_the_images_come_with_their_explanation_and_the_cli_draws_one(scoring, samples, tmp_path):
    """--explain-fraction 0.5: a stable half of the records carry the model's own pixel
    attributions (they add up to the score they explain); `model-store explain` draws one."""
    rows = load_samples(samples["digits-tf"])["inputs"]
    scoring.publish("explain-digits", "explain-image", "tensorflow", samples["digits-tf"] / "saved_model",
                    flags=["--explain-fraction", "0.5"])
    nudge_until_event(scoring, Event.AVAILABLE, "explain-image", 1, rows[:1], "explain-nudge")
    ids = scoring.send_records("explain-image", rows * 4, prefix="explain")
    results = {r.record_id: r for r in results_including(scoring, "explain-image", ids, timeout_s=120)}
    assert set(ids) <= set(results)
    explained = [results[i] for i in ids if "explanation.image_b64" in results[i].outputs]
    assert 0.25 * len(ids) <= len(explained) <= 0.75 * len(ids), f"{len(explained)} of {len(ids)} explained"
    for r in explained:
        out = outputs_of(r)
        assert out["explanation.image_b64"].shape == (32, 32) and out["explanation.label"] == out["label"]
        assert out["explanation.image_b64"].sum() == pytest.approx(
            out["explanation.score"] - out["explanation.baseline_score"], abs=0.02)
    png = tmp_path / "explained.png"
    done = subprocess.run([sys.executable, "-m", "model_store.cli", "--bootstrap-servers", scoring.bootstrap,
                           "explain", "--record-id", explained[0].record_id, "--png", str(png),
                           "--scores-topic", scoring.topics["scores"], "--data-topic", scoring.topics["data"]],
                          cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image_b64: a 32x32 heatmap over the image" in done.stdout and png.stat().st_size > 10_000


def test_a_bad_model_is_rejected_while_the_old_one_keeps_serving(scoring, samples, tmp_path):
    rows = load_samples(samples["wine-pmml"])["inputs"]
    scoring.publish("guarded", "guarded", "pmml", samples["wine-pmml"] / "model.pmml")
    ids = scoring.send_records("guarded", rows, prefix="guarded-v1")
    scoring.wait_for_event(Event.AVAILABLE, "guarded", 1)
    corrupt = tmp_path / "corrupt.pmml"
    corrupt.write_bytes(b"<PMML><this is not a model")
    scoring.publish("guarded", "guarded", "pmml", corrupt)
    ids += scoring.send_records("guarded", rows, prefix="guarded-during")
    error = scoring.wait_for_event(Event.ERROR, "guarded", 2)
    assert "not well-formed XML" in error.reason and "keeps its current model" in error.reason
    # An older version without the rollback flag is refused.
    stale = cli.descriptor_for(scoring.repo, scoring.repo.get("guarded", 1), scoring.store_url, 0)
    cli.announce(scoring.bootstrap, scoring.topics["models"], [stale])
    rejected = scoring.wait_for_event(Event.REJECTED, "guarded", 1)
    assert "not newer than v2" in rejected.reason and "ROLLBACK" in rejected.reason

    ids += scoring.send_records("guarded", rows, prefix="guarded-v2")
    results = results_including(scoring, "guarded", ids)
    assert sorted(r.record_id for r in results) == sorted(ids)
    assert {r.model_version for r in results} == {1}


def test_a_model_that_fails_its_own_verification_is_refused_and_the_old_one_serves(scoring, samples, tmp_path):
    doc = load_samples(samples["wine-pmml"])
    scoring.publish("verified", "verified", "pmml", samples["wine-pmml"] / "model.pmml")
    ids = scoring.send_records("verified", doc["inputs"], prefix="verified-v1")
    ready = scoring.wait_for_event(Event.READY, "verified", 1)
    assert ready.reason == f"verified on {len(doc['inputs'])} samples"
    expected = doc["expected"][2]["probability_1"]
    drifted = tmp_path / "drifted.pmml"  # the same model, claiming other outputs for sample 3
    drifted.write_text((samples["wine-pmml"] / "model.pmml").read_text().replace(
        f"<probability_1>{expected!r}</probability_1>", f"<probability_1>{expected + 0.01!r}</probability_1>"))
    scoring.publish("verified", "verified", "pmml", drifted)
    error, during = nudge_until_event(scoring, Event.ERROR, "verified", 2, doc["inputs"], "verified-during")
    ids += during
    assert "verify failed: sample 3 of 16: output 'probability_1'" in error.reason
    assert "keeps its current model" in error.reason
    ids += scoring.send_records("verified", doc["inputs"], prefix="verified-after")
    results = results_including(scoring, "verified", ids)
    assert sorted(r.record_id for r in results) == sorted(ids)
    assert {r.model_version for r in results} == {1}


def test_a_burst_is_counted_in_status_without_a_record_after_it(scoring, samples, capsys):
    """STATS go out by a timer once a data type goes quiet, not only with a later record."""
    rows = load_samples(samples["wine-pmml"])["inputs"]
    scoring.publish("quiet", "quiet", "pmml", samples["wine-pmml"] / "model.pmml")
    ids = scoring.send_records("quiet", rows, prefix="quiet")
    deadline = time.monotonic() + 90
    while len(mine(scoring.scores(timeout_s=2), "quiet")) < len(ids) and time.monotonic() < deadline:
        pass
    deadline = time.monotonic() + 30  # the job's --stats-interval-ms is 1 s
    counted = []
    while not counted and time.monotonic() < deadline:
        counted = [e for e in scoring.events(timeout_s=2)
                   if e.state == Event.STATS and e.data_type == "quiet" and e.stats["usage"] == len(ids)]
    assert counted, [describe(e) for e in scoring.events() if e.data_type == "quiet"]
    assert cli.main(["--bootstrap-servers", scoring.bootstrap, "status",
                     "--events-topic", scoring.topics["model-events"]]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("quiet "))
    assert line.split()[1:3] == ["quiet", "1"] and line.split()[5] == str(len(ids))


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_a_restarted_job_scores_with_the_same_models_without_a_republish(kafka, store, samples, tmp_path, mode):
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path)
    rows = load_samples(samples["wine-tf"])["inputs"]
    with RunningJob(setup.job_args(execution_mode=mode), tmp_path / "first.log") as job:
        setup.publish(f"restart-{mode}", "restart", "tensorflow", samples["wine-tf"] / "saved_model")
        before = setup.send_records("restart", rows, prefix="before")
        assert len(setup.scores(expected=len(before), timeout_s=120)) == len(before), job.log_tail()
        time.sleep(3)  # a checkpoint after the records were scored
        job.kill()
    checkpoint = latest_checkpoint(tmp_path / "checkpoints")
    with RunningJob(setup.job_args(restore_from=checkpoint.as_uri(), execution_mode=mode),
                    tmp_path / "second.log") as job:
        after = setup.send_records("restart", rows, prefix="after")
        results = setup.scores(expected=len(before) + len(after), timeout_s=120)
        job.assert_running()
    ids = [r.record_id for r in results]
    assert sorted(ids) == sorted(before + after), "lost or duplicated across the restart"
    assert {(r.model_name, r.model_version) for r in results} == {(f"restart-{mode}", 1)}
    accepted = [e for e in setup.events() if e.state == Event.ACCEPTED]
    assert len(accepted) == 1, [describe(e) for e in accepted]  # the descriptor was not re-read


@pytest.mark.cluster
def test_flink_run_on_the_standalone_cluster_with_parallelism_2(kafka, store, samples, tmp_path, standalone_cluster):
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path)
    args = setup.job_args(parallelism=2, job_name="scoring-test-" + setup.topics["data"])
    args = [a for a in args if not a.startswith("file:") and a != "--checkpoint-dir"]
    job_id = flink_cluster.submit_scoring_job(args)
    try:
        setup.publish("cluster-wine", "cluster-a", "pmml", samples["wine-pmml"] / "model.pmml")
        setup.publish("cluster-digits", "cluster-b", "tensorflow", samples["digits-tf"] / "saved_model",
                      flags=["--explain-fraction", "1"])
        setup.publish("cluster-onnx", "cluster-c", "onnx", samples["wine-onnx"] / "model.onnx")
        ids = setup.send_records("cluster-a", load_samples(samples["wine-pmml"])["inputs"], prefix="a")
        ids += setup.send_records("cluster-b", load_samples(samples["digits-tf"])["inputs"], prefix="b")
        json_ids = setup.send_records("cluster-c", load_samples(samples["wine-onnx"])["inputs"], prefix="c",
                                      as_json=True)
        values = consume(setup.bootstrap, setup.topics["scores"], len(ids) + len(json_ids), timeout_s=180)
        results = {read_result(v).record_id: (v, read_result(v)) for v in values}
        assert sorted(results) == sorted(ids + json_ids)
        assert {(r.data_type, r.model_name) for _, r in results.values()} == {
            ("cluster-a", "cluster-wine"), ("cluster-b", "cluster-digits"), ("cluster-c", "cluster-onnx")}
        assert all("explanation.image_b64" in r.outputs for _, r in results.values() if r.data_type == "cluster-b")
        assert all(results[i][0][:1] == b"{" for i in json_ids) and all(results[i][0][:1] != b"{" for i in ids)
        assert flink_cluster.rest(f"/jobs/{job_id}")["state"] == "RUNNING"
    finally:
        flink_cluster.cancel_job(job_id)
