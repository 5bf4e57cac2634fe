"""The Markdown tables and the curves plot of one benchmark report."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _e2e_rows(summary: dict[str, Any], key: str) -> list[list[str]]:
    return [
        [design, _n(s["median"]), _n(s["min"]), _n(s["max"]), f"{s['spread']:.0%}"]
        for design, s in summary[key].items()
    ]


def markdown(report: dict[str, Any]) -> str:
    m, s, lat = report["machine"], report["summary"], report["latency"]
    libs = ", ".join(f"{k} {v}" for k, v in m["libraries"].items())
    out = [
        f"Mode `{report['mode']}`, {report['elapsed_s']:.0f} s. Machine: {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_gb']} GB, {m['os']}, Python {m['python']}; {libs}. Load average before/after: "
        f"{report['load_before']} / {report['load_after']}.",
        "",
        "**End to end, 100 records per message** (records/s landed in the views; median, min, max over "
        "rounds; spread = (max - min) / median):",
        "",
        *_table(["design", "median", "min", "max", "spread"], _e2e_rows(s, "rates")),
        "",
        f"Ratios of tykpulse within each round (median): ceiling {s['ceiling_ratio']:.2f}, "
        f"naive {s['naive_ratio']:.2f}, native {s['native_ratio']:.2f}. The same worker without its "
        f"write-ahead log (`--no-wal`): ceiling {s.get('no_wal_ceiling_ratio', 0):.2f}, "
        f"naive {s.get('no_wal_naive_ratio', 0):.2f}.",
        "",
        f"One-core bound (receive as the bare SUB does + decode + aggregate, each record once, rates "
        f"of this run): {_n(s.get('one_core_bound_records_per_s', 0))} records/s, "
        f"{s.get('one_core_bound_ceiling_ratio', 0):.2f} of the ceiling; `--no-wal` lands "
        f"{s.get('no_wal_bound_ratio', 0):.2f} of it. With the write-ahead log's checksum and write "
        f"(stage `log`): {_n(s.get('durable_bound_records_per_s', 0))} records/s; tykpulse lands "
        f"{s.get('bound_ratio', 0):.2f} of it.",
        "",
        "**End to end, 1 record per message:**",
        "",
        *_table(["design", "median", "min", "max", "spread"], _e2e_rows(s, "single_rates")),
        "",
        f"tykpulse / ceiling (median of rounds): {s['single_record_ceiling_ratio']:.2f}." + _single_bounds(s),
        "",
        f"**Event-to-visible latency** at {_n(lat['rate'])} records/s (50 % of the median maximum), "
        f"{lat.get('flush_interval_s', 1.0):g} s flush: p50 {lat['p50_visible_s']:.2f} s, p99 "
        f"{lat['p99_visible_s']:.2f} s, max {lat['max_visible_s']:.2f} s (polled every {lat['poll_s']} s)."
        + _short_flush(report)
        + f" Peak RSS of the worker: {s['peak_rss_mb']:.0f} MB.",
        "",
        "**Stages, one core** (best of 3):",
        "",
        *_table(["stage", "parameters", "rate"], [_stage_row(r) for r in report["stages"]]),
    ]
    if "curves" in report:
        out += ["", *_curve_tables(report["curves"])]
    if "kafka" in report:
        out += ["", *_kafka_tables(report["kafka"])]
    return "\n".join(out) + "\n"


def _kafka_tables(kafka: dict[str, Any]) -> list[str]:
    by_setup: dict[str, list[dict[str, Any]]] = {}
    for run in kafka["runs"]:
        by_setup.setdefault(run["setup"], []).append(run)
    rows = []
    for setup, runs in by_setup.items():
        rates = sorted(r["records_per_s"] for r in runs)
        busy = ""
        if setup != "local":
            cores: dict[str, list[float]] = {}
            for run in runs:
                for name, value in run["cores_busy"].items():
                    cores.setdefault(name, []).append(value)
            busy = ", ".join(f"{name} {sorted(v)[len(v) // 2]:.2f}" for name, v in cores.items())
        rows.append([setup, _n(rates[len(rates) // 2]), _n(rates[0]), _n(rates[-1]), busy])
    s = kafka["summary"]
    return [
        "**The Faust path** (`python -m bench.kafka_workers`: a pre-filled 4-partition topic of the same "
        "messages, drained by `tykpulse worker`; records/s from when every partition is claimed to the "
        "last landed flush; cores busy = CPU seconds / wall seconds of each process meanwhile, median):",
        "",
        *_table(["setup", "median", "min", "max", "cores busy"], rows),
        "",
        f"Within each round (median): one Faust worker / the local runner {s['faust_local_ratio']:.2f}; "
        f"two workers / one (both through `db serve`) {s['faust_scaling']:.2f}. CPU of every process per "
        f"record landed: {s['faust_1_cpu_us_per_record']:.1f} µs (faust-1), "
        f"{s['faust_1_served_cpu_us_per_record']:.1f} µs (faust-1-served), "
        f"{s['faust_2_served_cpu_us_per_record']:.1f} µs (faust-2-served). At that cost this machine's "
        f"cores allow two workers at most {s['faust_scaling_machine_bound']:.2f} times one worker's rate.",
    ]


def _single_bounds(s: dict[str, Any]) -> str:
    bound = s.get("single_record_bound_ceiling_ratio")
    durable = s.get("single_record_durable_bound_ceiling_ratio")
    if bound is None or durable is None:
        return ""
    return (
        f" One-core bound at this size (same formula, 1-record stages): {bound:.2f} of the ceiling, "
        f"{durable:.2f} with the write-ahead log."
    )


def _stage_row(row: dict[str, Any]) -> list[str]:
    if row["stage"] == "decode":
        return [
            "decode",
            f"{row['encoding']}, {row['records_per_message']} records/message",
            f"{_n(row['records_per_s'])} records/s",
        ]
    if row["stage"] == "aggregate":
        return [
            "window + aggregate",
            f"{_n(row['records'])} records, {_n(row['group_keys'])} (org, api) keys, "
            f"{_n(row['api_keys'])} API keys",
            f"{_n(row['records_per_s'])} records/s",
        ]
    if row["stage"] == "log":
        return [
            "write-ahead log",
            f"{row['records_per_message']} records/message, interval fsync",
            f"{_n(row['records_per_s'])} records/s",
        ]
    return ["sink", f"{_n(row['rows_per_insert'])} rows/insert", f"{_n(row['rows_per_s'])} rows/s"]


def _curve_tables(curves: dict[str, list[dict[str, Any]]]) -> list[str]:
    per_message: dict[int, dict[str, dict[str, Any]]] = {}
    for run in curves["records_per_message"]:
        per_message.setdefault(run["records_per_message"], {})[run["design"]] = run
    rows = [
        [
            str(r),
            _n(d["tykpulse"]["records_per_s"]),
            _n(d["ceiling"]["records_per_s"]),
            f"{d['tykpulse']['records_per_s'] / d['ceiling']['records_per_s']:.2f}",
            f"{d['tykpulse']['peak_rss_mb']:.0f}",
        ]
        for r, d in sorted(per_message.items())
    ]
    keys = [[_n(r["keys"]), _n(r["records_per_s"]), f"{r['peak_rss_mb']:.0f}"] for r in curves["keys"]]
    workers = [
        [str(r["partitions"]), _n(r["records_per_s"]), f"{r['peak_rss_mb']:.0f}"] for r in curves["workers"]
    ]
    return [
        "**By records per message:**",
        "",
        *_table(["records/message", "tykpulse", "ceiling", "ratio", "tykpulse peak RSS MB"], rows),
        "",
        "**By distinct API keys** (100 records/message):",
        "",
        *_table(["distinct keys", "records/s", "peak RSS MB"], keys),
        "",
        "**By worker processes** (firehose split by publisher; RSS summed):",
        "",
        *_table(["workers", "records/s", "peak RSS MB"], workers),
    ]


def write_markdown(report: dict[str, Any], path: Path) -> None:
    path.write_text(markdown(report))


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = report["curves"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for design in ("tykpulse", "ceiling"):
        runs = [r for r in curves["records_per_message"] if r["design"] == design]
        axes[0].plot(
            [r["records_per_message"] for r in runs],
            [r["records_per_s"] / 1e6 for r in runs],
            marker="o",
            label=design,
        )
    axes[0].set(xscale="log", xlabel="records per message", ylabel="M records/s", title="Throughput by batch")
    axes[0].legend()
    keys = curves["keys"]
    axes[1].plot([r["keys"] for r in keys], [r["peak_rss_mb"] for r in keys], marker="o", color="tab:red")
    axes[1].set(
        xscale="log",
        xlabel="distinct API keys",
        ylabel="peak RSS (MB)",
        title="Memory by key cardinality",
        ylim=(0, None),
    )
    twin = axes[1].twinx()
    twin.plot([r["keys"] for r in keys], [r["records_per_s"] / 1e6 for r in keys], marker="s", linestyle="--")
    twin.set(ylabel="M records/s", ylim=(0, None))
    workers = curves["workers"]
    axes[2].bar([str(r["partitions"]) for r in workers], [r["records_per_s"] / 1e6 for r in workers])
    axes[2].set(xlabel="worker processes", ylabel="M records/s", title="Scale-out on 2 cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


_START, _END = "<!-- bench:results -->", "<!-- /bench:results -->"
DOCS = Path(__file__).resolve().parents[1] / "docs"


def update_docs(markdown_path: Path, plot_path: Path) -> None:
    """Put the tables between docs/benchmarks.md's markers and the plot beside it."""
    page = DOCS / "benchmarks.md"
    text = page.read_text()
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    page.write_text(f"{head}{_START}\n{markdown_path.read_text()}{_END}{tail}")
    (DOCS / "benchmarks-curves.png").write_bytes(plot_path.read_bytes())


def _short_flush(report: dict[str, Any]) -> str:
    """The same rate with a shorter flush interval, if the run measured it (older results did not)."""
    short, lat = report.get("latency_short_flush"), report["latency"]
    if not short:
        return ""
    return (
        f" Flushing every {short['flush_interval_s']:g} s instead: p99 {short['p99_visible_s']:.2f} s,"
        f" at {short['cpu_per_record_us']:.2f} us of worker CPU per record against"
        f" {lat['cpu_per_record_us']:.2f}."
    )
