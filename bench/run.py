"""`python -m bench [quick|full|smoke]`: the benchmark suite and its one-line summary.

quick (make bench, < 5 min): stages, then rounds of end-to-end runs of tykpulse and
the three baselines on the same messages (100 records per message, then 1), then
event-to-visible latency at 50 % of tykpulse's median rate.
full (make bench-full): the same with more rounds, plus the curves: records/s and
peak RSS by records per message, by distinct API keys, by worker processes; then
the Faust path beside the local runner (bench.kafka_workers). It also puts the
tables and the plot into docs/benchmarks.md.
smoke (make test): one short round of everything, to prove the suite runs.

Ratios are taken within a round (same minute, same machine load), then the
median over rounds is reported. The last line printed is the summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from bench import kafka_workers, latency, stages
from bench.e2e import DESIGNS, E2ESpec, run_e2e
from bench.machine import describe_machine, load_average
from bench.report import update_docs, write_markdown, write_plot
from bench.workload import WorkloadShape
from pipelines.settings import KafkaBridgeSettings

RESULTS = Path(__file__).resolve().parent / "results"
# the shorter flush interval the latency phase also measures (the default is the worker's own)
SHORT_FLUSH_S = 0.5


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    duration_s: float
    rounds: int
    single_rounds: int
    quiet_s: float
    latency_s: float
    decode_records: int
    aggregate_records: int
    sink_inserts: int
    curves: bool = False
    full_stages: bool = True
    kafka_rounds: int = 0  # rounds of the Faust path beside the local runner (bench.kafka_workers)
    kafka_records: int = 1_500_000


PLANS = {
    "smoke": Plan(1.0, 1, 0, 0.4, 2.5, 2_000, 20_000, 1, full_stages=False),
    "quick": Plan(4.0, 3, 3, 1.0, 8.0, 20_000, 300_000, 5),
    "full": Plan(6.0, 5, 3, 1.0, 12.0, 40_000, 1_000_000, 10, curves=True, kafka_rounds=3),
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_stages(plan: Plan) -> list[dict[str, Any]]:
    if not plan.full_stages:
        out = [stages.decode("msgpack", 100, plan.decode_records, 3)]
        out.append(stages.aggregate(plan.aggregate_records, 1_000, 1_000, 3))
        out.append(stages.log_append(100, plan.decode_records, 3))
        return out
    out = []
    for encoding in ("msgpack", "json"):
        for per_message in (1, 100, 1000):
            out.append(stages.decode(encoding, per_message, plan.decode_records, 3))
    for keys in (1_000, 100_000, 1_000_000):
        out.append(stages.aggregate(plan.aggregate_records, min(keys, plan.aggregate_records), keys, 3))
    for rows in (1_000, 10_000, 100_000):
        out.append(stages.sink(min(rows, plan.aggregate_records), plan.sink_inserts))
    out.append(stages.log_append(100, plan.decode_records * 5, 3))
    out.append(stages.log_append(1, plan.decode_records, 3))
    for row in out:
        log(f"  stage {row}")
    return out


def e2e_rounds(plan: Plan, per_message: int, designs: tuple[str, ...], rounds: int) -> list[dict[str, Any]]:
    runs = []
    for index in range(rounds):
        # rotate the order so that no design always runs first (or last) in a round
        order = designs[index % len(designs) :] + designs[: index % len(designs)]
        for design in order:
            spec = E2ESpec(design, WorkloadShape(per_message), plan.duration_s, quiet_s=plan.quiet_s)
            result = {**run_e2e(spec), "round": index}
            log(
                f"  e2e round={index} design={design} R={per_message} "
                f"records/s={result['records_per_s']:,.0f} rss={result['peak_rss_mb']:.0f}MB"
            )
            runs.append(result)
    return runs


def _ratios(runs: list[dict[str, Any]], against: str, design: str = "tykpulse") -> list[float]:
    by_round: dict[int, dict[str, float]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["design"]] = run["records_per_s"]
    return [r[design] / r[against] for r in by_round.values() if design in r and against in r]


def _rates(runs: list[dict[str, Any]], design: str) -> list[float]:
    return [r["records_per_s"] for r in runs if r["design"] == design]


def _spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"median": 0.0, "min": 0.0, "max": 0.0, "spread": 0.0}
    median = statistics.median(values)
    return {
        "median": median,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / median,
    }


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def _stage_rate(rows: list[dict[str, Any]], stage: str, **match: object) -> float | None:
    rates = [
        r["records_per_s"]
        for r in rows
        if r["stage"] == stage and all(r.get(k) == v for k, v in match.items())
    ]
    return max(rates) if rates else None


def one_core_bounds(
    stage_rows: list[dict[str, Any]], ceiling: float, per_message: int
) -> tuple[float, float] | None:
    """Records/s of one core that receives (as the bare SUB does), decodes and aggregates each record,
    and the same with the write-ahead log's checksum and write; None without the stages.

    Work every design must do once per record, measured in this run. A worker
    is one Python process whose Python work is serialised by the GIL, so this is
    close to what it can land; it is an estimate, not a wall (parts of the
    aggregation, in polars and chDB, run outside the GIL).
    """
    decode = _stage_rate(stage_rows, "decode", encoding="msgpack", records_per_message=per_message)
    logging = _stage_rate(stage_rows, "log", records_per_message=per_message)
    # The fewest keys is the cheapest aggregation: the bound is an upper one.
    aggregate = _stage_rate(stage_rows, "aggregate")
    if decode is None or logging is None or aggregate is None or ceiling <= 0:
        return None
    bound = 1 / (1 / ceiling + 1 / decode + 1 / aggregate)
    return bound, 1 / (1 / bound + 1 / logging)


def summarise(
    batched: list[dict[str, Any]],
    single: list[dict[str, Any]],
    lat: dict[str, Any],
    stage_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    tyk = [r for r in batched if r["design"] == "tykpulse"]
    rate = statistics.median(_rates(batched, "tykpulse"))
    ceiling = statistics.median(_rates(batched, "ceiling"))
    single_ceiling = _median(_rates(single, "ceiling"))
    bounds = one_core_bounds(stage_rows, ceiling, 100)
    if bounds is None:
        msg = "the stages needed for the one-core bound (decode, aggregate, log at 100 records) are missing"
        raise ValueError(msg)
    bound, durable_bound = bounds
    single_bounds = one_core_bounds(stage_rows, single_ceiling, 1)
    return {
        "e2e_records_per_s": rate,
        "ceiling_ratio": statistics.median(_ratios(batched, "ceiling")),
        "naive_ratio": statistics.median(_ratios(batched, "naive")),
        "native_ratio": statistics.median(_ratios(batched, "native")),
        "no_wal_ceiling_ratio": _median(_ratios(batched, "ceiling", "tykpulse-no-wal")),
        "no_wal_naive_ratio": _median(_ratios(batched, "naive", "tykpulse-no-wal")),
        "single_record_ceiling_ratio": _median(_ratios(single, "ceiling")),
        "single_record_records_per_s": _median(_rates(single, "tykpulse")),
        "one_core_bound_records_per_s": bound,
        "one_core_bound_ceiling_ratio": bound / ceiling,
        "durable_bound_records_per_s": durable_bound,
        "bound_ratio": rate / durable_bound,
        "no_wal_bound_ratio": _median(_rates(batched, "tykpulse-no-wal")) / bound,
        # 1 record per message: the same bounds, as ratios of that ceiling (None in smoke mode).
        "single_record_bound_ceiling_ratio": (
            None if single_bounds is None else single_bounds[0] / single_ceiling
        ),
        "single_record_durable_bound_ceiling_ratio": (
            None if single_bounds is None else single_bounds[1] / single_ceiling
        ),
        "p99_visible_s": lat["p99_visible_s"],
        "p50_visible_s": lat["p50_visible_s"],
        "peak_rss_mb": max(r["peak_rss_mb"] for r in tyk),
        # the worker process's CPU (user + system) per landed record, log on, 100 records/message
        "cpu_per_record_us": statistics.median(
            r["consumer_cpu_s"] / r["landed_records"] * 1e6 for r in tyk if r["landed_records"]
        ),
        "rates": {d: _spread(_rates(batched, d)) for d in DESIGNS},
        "single_rates": {d: _spread(_rates(single, d)) for d in ("tykpulse", "ceiling")},
    }


def curves(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {"records_per_message": [], "keys": [], "workers": []}
    for per_message in (1, 10, 100, 1000):
        for design in ("tykpulse", "ceiling"):
            spec = E2ESpec(design, WorkloadShape(per_message), plan.duration_s, quiet_s=plan.quiet_s)
            out["records_per_message"].append(run_e2e(spec))
            log(f"  curve R={per_message} {design} {out['records_per_message'][-1]['records_per_s']:,.0f}")
    for keys in (1_000, 10_000, 100_000, 1_000_000):
        spec = E2ESpec("tykpulse", WorkloadShape(100, keys), plan.duration_s * 2, quiet_s=plan.quiet_s)
        out["keys"].append(run_e2e(spec))
        log(f"  curve keys={keys} rss={out['keys'][-1]['peak_rss_mb']:.0f}MB")
    for workers in (1, 2):
        spec = E2ESpec("tykpulse", WorkloadShape(100), plan.duration_s, quiet_s=plan.quiet_s)
        out["workers"].append(run_e2e(spec, partitions=workers))
        log(f"  curve workers={workers} {out['workers'][-1]['records_per_s']:,.0f}")
    return out


def flush_tradeoff_line(default: dict[str, Any], short: dict[str, Any]) -> str:
    return (
        f"bench: at {default['rate']:,.0f} records/s, flush every {default['flush_interval_s']:g} s: "
        f"p99 visible {default['p99_visible_s']:.2f} s, {default['cpu_per_record_us']:.2f} us CPU/record; "
        f"every {short['flush_interval_s']:g} s: p99 {short['p99_visible_s']:.2f} s, "
        f"{short['cpu_per_record_us']:.2f} us CPU/record"
    )


def summary_line(summary: dict[str, Any]) -> str:
    return (
        f"bench: e2e_records_per_s={summary['e2e_records_per_s']:.0f} "
        f"ceiling_ratio={summary['ceiling_ratio']:.2f} naive_ratio={summary['naive_ratio']:.2f} "
        f"native_ratio={summary['native_ratio']:.2f} p99_visible_s={summary['p99_visible_s']:.2f} "
        f"peak_rss_mb={summary['peak_rss_mb']:.0f} cpu_per_record_us={summary['cpu_per_record_us']:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    mode = args[0] if args else "quick"
    plan = PLANS[mode]
    out_dir = Path(os.environ.get("TYKPULSE_BENCH_RESULTS", RESULTS))
    started = time.time()
    report: dict[str, Any] = {"mode": mode, "machine": describe_machine(), "load_before": load_average()}
    log(f"bench {mode}: stages")
    report["stages"] = run_stages(plan)
    log("bench: end to end, 100 records per message")
    batched = e2e_rounds(plan, 100, DESIGNS, plan.rounds)
    log("bench: end to end, 1 record per message")
    single = e2e_rounds(plan, 1, ("tykpulse", "ceiling"), plan.single_rounds)
    rate = 0.5 * statistics.median(_rates(batched, "tykpulse"))
    log(f"bench: event-to-visible latency at {rate:,.0f} records/s")
    lat = latency.measure(E2ESpec("tykpulse", WorkloadShape(100), plan.latency_s, rate=rate))
    # What a shorter flush interval buys and costs, at the same rate in the same run: visibility
    # waits for the next flush, and every flush has a fixed cost (the inserts into the views).
    short = E2ESpec("tykpulse", WorkloadShape(100), plan.latency_s, rate=rate, flush_interval_s=SHORT_FLUSH_S)
    report["latency_short_flush"] = latency.measure(short)
    report.update(
        e2e=batched + single, latency=lat, summary=summarise(batched, single, lat, report["stages"])
    )
    if plan.curves:
        log("bench: curves")
        report["curves"] = curves(plan)
    if plan.kafka_rounds:
        log("bench: the Faust path (Kafka), beside the local runner on the same messages")
        report["kafka"] = kafka_workers.measure(
            plan.kafka_rounds,
            plan.kafka_records,
            plan.duration_s,
            KafkaBridgeSettings().bridge_compression,
            KafkaBridgeSettings().bridge_bundle_messages,
        )
    report["load_after"] = load_average()
    report["elapsed_s"] = time.time() - started
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(report, indent=1))
    write_markdown(report, out_dir / "latest.md")
    if plan.curves:
        write_plot(report, out_dir / "curves.png")
        if out_dir == RESULTS:
            update_docs(out_dir / "latest.md", out_dir / "curves.png")
    s = report["summary"]
    log(
        f"bench: one-core bound (receive + decode + aggregate, this run) "
        f"{s['one_core_bound_records_per_s']:,.0f} records/s = {s['one_core_bound_ceiling_ratio']:.2f} "
        f"of the ceiling, --no-wal lands {s['no_wal_bound_ratio']:.2f} of it; with the log's checksum "
        f"and write, {s['durable_bound_records_per_s']:,.0f} records/s, tykpulse lands {s['bound_ratio']:.2f}"
    )
    log(flush_tradeoff_line(report["latency"], report["latency_short_flush"]))
    if "kafka" in report:
        log(kafka_workers.summary_line(report["kafka"]["summary"]))
    print(summary_line(s), flush=True)
