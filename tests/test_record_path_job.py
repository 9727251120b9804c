"""The scoring job's record path (--columnar false: Python reads every record and writes every
result, docs/columnar.md) passes the job's own end-to-end tests, which run on the columnar
default: the same test functions, against one record-path job on a real MiniCluster, real
broker and store."""

from __future__ import annotations

import pytest

from infra.job_harness import RunningJob, ScoringSetup
from tests.test_scoring_job import (  # noqa: F401 - collected here, against the record path
    test_a_bad_model_is_rejected_while_the_old_one_keeps_serving,
    test_an_onnx_model_scores_as_onnx_runtime_itself_scores_the_same_records,
    test_bad_records_are_dead_lettered_while_good_ones_flow,
    test_json_records_get_json_results_beside_protobuf_ones,
    test_swap_mid_stream_scores_every_record_once_by_one_version,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def scoring(kafka, store, tmp_path_factory):
    repo, server = store
    setup = ScoringSetup(kafka.bootstrap_servers, repo, server.base_url, tmp_path_factory.mktemp("record-path-job"))
    with RunningJob(setup.job_args(hold_unpublished_ms=5000, columnar="false", batch_size=64),
                    setup.workdir / "job.log") as job:
        setup.job = job
        yield setup
        job.assert_running()
