"""The benchmark report: a markdown table against the project's targets, and a chart."""

from __future__ import annotations

from pathlib import Path

PROFILES = "bench/results/profile-<kind>.txt"  # written by `python -m bench.profile --kind <kind>`
TARGETS = [
    # (label, value, target, higher is better)
    ("PMML job / raw PMML", lambda r: r["throughput"]["pmml_rps"] / r["throughput"]["raw_pmml_rps"], 0.5, True),
    ("TF job / raw TF", lambda r: r["throughput"]["tf_rps"] / r["throughput"]["raw_tf_rps"], 0.5, True),
    ("ONNX job / raw ONNX Runtime", lambda r: r["throughput"]["onnx_rps"] / r["throughput"]["raw_onnx_rps"], 0.5, True),
    ("XGBoost job / raw XGBoost", lambda r: r["throughput"]["xgboost_rps"] / r["throughput"]["raw_xgboost_rps"], 0.5,
     True),
    ("LightGBM job / raw LightGBM", lambda r: r["throughput"]["lightgbm_rps"] / r["throughput"]["raw_lightgbm_rps"],
     0.5, True),
    ("pass-through / JVM-only job", lambda r: r["throughput"]["passthrough_rps"] / r["throughput"]["jvm_only_rps"],
     0.7, True),
    *((f"{label} / the record path, same run", lambda r, k=key: r["throughput"]["ratios"][f"{k}_over_record_path"],
       3.0, True) for label, key in (("pass-through", "passthrough"), ("TF job", "tf"), ("ONNX job", "onnx"))),
    ("pass-through / bare PyFlink", lambda r: r["throughput"]["passthrough_rps"] / r["throughput"]["bare_pyflink_rps"],
     0.85, True),
    ("TF job, thread mode / raw TF", lambda r: r["throughput"]["tf_thread_rps"] / r["throughput"]["raw_tf_rps"],
     0.25, True),
    ("pass-through / bare PyFlink, thread mode",
     lambda r: r["throughput"]["passthrough_thread_rps"] / r["throughput"]["bare_pyflink_thread_rps"], 0.85, True),
    ("PMML job / plain consumer", lambda r: r["throughput"]["pmml_rps"] / r["throughput"]["plain_consumer_pmml_rps"],
     1.0, True),
    ("TF job / plain consumer", lambda r: r["throughput"]["tf_rps"] / r["throughput"]["plain_consumer_tf_rps"],
     1.0, True),
    ("TF job, thread mode / plain consumer",
     lambda r: r["throughput"]["tf_thread_rps"] / r["throughput"]["plain_consumer_tf_rps"], 1.0, True),
    ("PMML / pass-through", lambda r: r["throughput"]["pmml_rps"] / r["throughput"]["passthrough_rps"], 0.8, True),
    ("TF / pass-through", lambda r: r["throughput"]["tf_rps"] / r["throughput"]["passthrough_rps"], 0.7, True),
    ("PMML / remote HTTP", lambda r: r["throughput"]["pmml_rps"] / r["throughput"]["remote_http_rps"], 10, True),
    ("TF / remote HTTP", lambda r: r["throughput"]["tf_rps"] / r["throughput"]["remote_http_rps"], 10, True),
    ("end-to-end p99 at 50% load, PMML (ms)", lambda r: r["latency"]["pmml"]["p99_ms"], 250, False),
    ("end-to-end p99 at 50% load, TF (ms)", lambda r: r["latency"]["tf"]["p99_ms"], 250, False),
    ("end-to-end p99 at 50% load, TF, thread mode (ms)", lambda r: r["latency"]["tf_thread"]["p99_ms"], 250, False),
    ("publish -> first result p50 (s)", lambda r: r["swap"]["publish_to_first_p50_s"], 2.0, False),
    ("p=4 on 2 TaskManagers: publish -> first v2 result, worst subtask (s)",
     lambda r: r["scale"]["swap"]["publish_to_first_v2_worst_s"], 2.0, False),
    ("p99 latency around swaps / steady", lambda r: r["swap"]["latency_p99_ratio"], 2.0, False),
    ("1,000 models: peak RSS (MB)", lambda r: r["many_models"]["peak_rss_mb"], 4096, False),
    ("1,000 models / single-model throughput", lambda r: r["many_models"]["rps"] / r["throughput"]["pmml_rps"], 0.5, True),
]


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"


def _load(report: dict) -> str:
    load = report["machine"].get("load_avg_1m")
    return f"median {load['median']:.1f}, max {load['max']:.1f}" if load else "not recorded"


def markdown(report: dict) -> str:
    out = [f"# Benchmark results\n\ncommit `{report['git_commit'][:10]}`, {report['date'][:19]}, "
           f"{report['machine']['cores']} cores, {report['machine']['memory_gb']} GB, "
           f"1-minute load average during the run: {_load(report)}\n"]
    t = report.get("throughput")
    if t:
        out += ["## Throughput (records/s, steady: results between the 10th and 90th percentile of their "
                "times, after a warm-up record per data type; thread mode: PyFlink's Python embedded in the "
                "TaskManager's JVM, where PMML does not load)\n",
                "| case | process p=1 | thread p=1 | thread ÷ process | ÷ pass-through (process) | ÷ raw library "
                "| process p=2 |", "|---|---:|---:|---:|---:|---:|---:|"]
        rows = [("JVM only (the job's source, keying, sink; a Java identity, no Python)", "jvm_only", None),
                ("bare PyFlink (same topology, identity functions)", "bare_pyflink", None),
                ("pass-through", "passthrough", None), ("PMML", "pmml", "raw_pmml_rps"),
                ("TensorFlow", "tf", "raw_tf_rps"), ("ONNX", "onnx", "raw_onnx_rps"),
                ("XGBoost", "xgboost", "raw_xgboost_rps"), ("LightGBM", "lightgbm", "raw_lightgbm_rps"),
                ("remote HTTP (TF)", "remote_http", "raw_tf_rps"),
                ("pass-through, record path", "passthrough_record_path", None),
                ("TensorFlow, record path", "tf_record_path", "raw_tf_rps"),
                ("ONNX, record path", "onnx_record_path", "raw_onnx_rps")]
        for label, key, raw in rows:
            if f"{key}_rps" not in t:
                continue
            rps, thread = t[f"{key}_rps"], t.get(f"{key}_thread_rps")
            cells = [_fmt(rps), _fmt(thread) if thread else "—", f"{thread / rps:.2f}" if thread else "—",
                     f"{rps / t['passthrough_rps']:.2f}", _fmt(rps / t[raw]) if raw else "—",
                     _fmt(t[f"{key}_p2_rps"]) if f"{key}_p2_rps" in t else "—"]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
        for label, key in [("plain consumer, PMML (kafka-python loop)", "plain_consumer_pmml_rps"),
                           ("plain consumer, TF (kafka-python loop)", "plain_consumer_tf_rps")]:
            if key in t:
                out.append(f"| {label} | {_fmt(t[key])} | | | {t[key] / t['passthrough_rps']:.2f} | | |")
        out.append(f"| raw PMML (no Flink, batches of 256) | {_fmt(t['raw_pmml_rps'])} | | | | | |")
        out.append(f"| raw TF (no Flink, batches of 256) | {_fmt(t['raw_tf_rps'])} | | | | | |")
        if "raw_onnx_rps" in t:
            out.append(f"| raw ONNX Runtime (no Flink, batches of 256) | {_fmt(t['raw_onnx_rps'])} | | | | | |")
        for label, key in (("XGBoost (inplace_predict", "raw_xgboost_rps"), ("LightGBM (predict", "raw_lightgbm_rps")):
            if key in t:
                out.append(f"| raw {label} on a ready matrix of 256 rows, one thread) | {_fmt(t[key])} | | | | | |")
        out += ["", "The job's own Python per batch and per record (columnar path, process mode; the model call "
                "included; PyFlink's own per-element work is not):\n",
                "| case | records per call | µs per batch | µs per record |", "|---|---:|---:|---:|"]
        out += [f"| {k} | {t[f'{k}_records_per_call']:.0f} | {t[f'{k}_python_us_per_batch']:,.0f} | "
                f"{t[f'{k}_python_us_per_record']:.2f} |" for k in ("passthrough", "pmml", "tf", "onnx", "xgboost", "lightgbm")
                if f"{k}_python_us_per_batch" in t]
        out.append("")
    if "latency" in report:
        out += ["## End-to-end latency at half the measured maximum (at-least-once, ms)\n",
                "| model (mode) | records/s | p50 | p99 | max |", "|---|---:|---:|---:|---:|"]
        out += [f"| {kind.replace('_thread', ' (thread)')} | {_fmt(v['rate_rps'])} | {v['p50_ms']:.0f} | {v['p99_ms']:.0f} | {v['max_ms']:.0f} |"
                for kind, v in report["latency"].items()]
        out.append("")
    for key, title in (("formats", "Formats: ONNX, JSON records, explanations (digits-tf, integrated gradients)"),
                       ("bundles", "PyFlink bundle size (records/s)"), ("swap", "Model swaps"), ("rollout", "Rollouts (PMML, a shadow scoring every record)"),
                       ("many_models", "Many models")):
        if key in report:
            out += [f"## {title}\n", "| measure | value |", "|---|---:|"]
            out += [f"| {k.replace('_', ' ')} | {_fmt(v) if isinstance(v, float) else v} |"
                    for k, v in report[key].items()]
            out.append("")
    if "security" in report:
        sec = report["security"]
        out += ["## Security: Kafka over SASL_SSL (TLS, SCRAM-SHA-512, ACLs) against plaintext (records/s)\n",
                "| case | plaintext | SASL_SSL | ÷ |", "|---|---:|---:|---:|"]
        out += [f"| {kind} | {_fmt(sec[f'{kind}_plaintext_rps'])} | {_fmt(sec[f'{kind}_tls_rps'])} | "
                f"{sec[f'{kind}_tls_over_plaintext']:.2f} |" for kind in ("passthrough", "pmml")]
        out += ["", "Per model load (ms, median):\n",
                "| model | artifact KB | graph KB | signature check | SHA-256 of the artifact | graph check |",
                "|---|---:|---:|---:|---:|---:|"]
        out += [f"| {r['model']} | {r['artifact_kb']:,.0f} | {r['graph_kb']:,.0f} | {r['verify_signature_ms']:.3f} | "
                f"{r['sha256_ms']:.2f} | {r['graph_check_ms']:.2f} |" for r in sec["trust_checks"]]
        out.append("")
    if "scale" in report:
        sc = report["scale"]
        out += [f"## At scale: `flink run` on {sc['taskmanagers']} TaskManagers, 16 data types, a 4-partition topic "
                f"({sc['records']:,} records per case; records/s, 1-minute load average)\n",
                "| model | p=1 | p=2 | p=4 | p=4 ÷ p=1 |", "|---|---:|---:|---:|---:|"]
        out += [f"| {kind} | " + " | ".join(f"{_fmt(sc[f'{kind}_p{p}_rps'])} (load {sc[f'{kind}_p{p}_load_avg_1m']:.1f})"
                                          for p in (1, 2, 4)) + f" | {sc[f'{kind}_p4_over_p1']:.2f} |"
                for kind in ("pmml", "tf")]
        sw = sc["swap"]
        out += ["", f"Swap of all 16 data types at p={sw['parallelism']}: {sw['data_types_swapped']} swapped; "
                f"publish → first result by v2: p50 {sw['publish_to_first_v2_p50_s']:.2f} s, worst "
                f"{sw['publish_to_first_v2_worst_s']:.2f} s; worst per subtask: "
                + ", ".join(f"{k}: {v:.2f} s" for k, v in sorted(sw["worst_per_subtask_s"].items())),
                "", f"TaskManagers that died when a job was cancelled (started again before the next job): "
                f"{sc.get('taskmanagers_died_at_a_cancel', 0)}", ""]
    if "batch_sweep" in report:
        out += ["## Micro-batch size (PMML)\n",
                "| batch size | records/s | ms per model call | records per call | ms per record |",
                "|---:|---:|---:|---:|---:|"]
        out += [f"| {b['batch_size']} | {_fmt(b['rps'])} | {b['batch_mean_ms']:.2f} | "
                f"{b.get('records_per_call', float('nan')):.1f} | {b['ms_per_record_in_batch']:.3f} |"
                for b in report["batch_sweep"]]
        out.append("")
    out += ["## Targets\n", "| target | measured | goal | met |", "|---|---:|---:|:---|"]
    missed = False
    for label, value, goal, higher in TARGETS:
        try:
            v = value(report)
        except (KeyError, ZeroDivisionError):
            continue
        met = v >= goal if higher else v <= goal
        missed |= not met
        verdict = "yes" if met else f"no: {abs(v - goal) / goal:.0%} {'short' if higher else 'over'}"
        out.append(f"| {label} | {_fmt(v)} | {'≥' if higher else '≤'} {_fmt(goal)} | {verdict} |")
    if missed:
        out.append(f"\nWhere the time goes in a missed case: py-spy and JFR profiles in `{PROFILES}`; "
                   "the README's Benchmarks section sums them up.")
    return "\n".join(out) + "\n"


def chart(report: dict, target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("throughput", "scale", "batch_sweep") if k in report]
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(6 * max(len(panels), 1), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=False):
        if panel == "throughput":
            t = report["throughput"]
            bars = [("JVM only", "jvm_only_rps", "black"),
                    ("bare PyFlink", "bare_pyflink_rps", "black"), ("pass-through", "passthrough_rps", "grey"),
                    ("PMML", "pmml_rps", "C0"), ("TF", "tf_rps", "C1"), ("ONNX", "onnx_rps", "C4"),
                    ("TF, record path", "tf_record_path_rps", "C1"),
                    ("bare, thread", "bare_pyflink_thread_rps", "black"),
                    ("pass-through, thread", "passthrough_thread_rps", "grey"), ("TF, thread", "tf_thread_rps", "C1"),
                    ("remote HTTP", "remote_http_rps", "C3"),
                    ("plain PMML", "plain_consumer_pmml_rps", "C2"), ("plain TF", "plain_consumer_tf_rps", "C2"),
                    ("raw PMML", "raw_pmml_rps", "C0"), ("raw TF", "raw_tf_rps", "C1"),
                    ("raw ONNX", "raw_onnx_rps", "C4")]
            bars = [b for b in bars if b[1] in t]
            ax.bar([b[0] for b in bars], [t[b[1]] for b in bars], color=[b[2] for b in bars])
            ax.set_yscale("log")
            ax.set_ylabel("records/s (log)")
            ax.set_title("Throughput, parallelism 1")
            ax.tick_params(axis="x", rotation=30)
        elif panel == "scale":
            sc = report["scale"]
            for kind, color in (("pmml", "C0"), ("tf", "C1")):
                ax.plot([1, 2, 4], [sc[f"{kind}_p{p}_rps"] for p in (1, 2, 4)], marker="o", color=color, label=kind)
            ax.set_xticks([1, 2, 4])
            ax.set_xlabel("parallelism (2 TaskManagers, 2 cores)")
            ax.set_ylabel("records/s")
            ax.set_title("At scale, flink run")
            ax.legend()
        else:
            sweep = report["batch_sweep"]
            ax.plot([b["batch_size"] for b in sweep], [b["rps"] for b in sweep], marker="o")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("batch size")
            ax.set_ylabel("records/s")
            ax.set_title("Micro-batch sweep (PMML)")
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
