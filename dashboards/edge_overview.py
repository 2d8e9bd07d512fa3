"""The "Edge inference overview" dashboard as code; `edgeharness dashboards build` writes edge-overview.json.

Every panel answers one question, named in its description. Metric names are those the per-region
collectors remote-write to Prometheus (collector/otelcol.yaml: OTel names with unit and _total suffixes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import bargauge, common, geomap, prometheus, stat, statetimeline, table, tempo
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import timeseries as ts
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import geomap as geomap_models
from grafana_foundation_sdk.models import prometheus as prometheus_models
from grafana_foundation_sdk.models import tempo as tempo_models
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    FieldTextAlignment,
    FrameGeometrySourceMode,
    GraphDrawStyle,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)

UID = "edgeharness-overview"
TITLE = "Edge inference overview"
PROMETHEUS = models.DataSourceRef(type_val="prometheus", uid="edgeharness-prometheus")
TEMPO = models.DataSourceRef(type_val="tempo", uid="edgeharness-tempo")
REGIONS_FILE = Path(__file__).resolve().parents[1] / "harness" / "data" / "regions.yaml"

# SLOs of loadtests/slo/default.yaml, in seconds or as a fraction.
P50_SLO_S = 0.010
COLD_START_P95_SLO_S = 0.2
ERROR_RATE_SLO = 0.01

REGION = 'cloud_region=~"$region"'
SERVER_BY = "cloud_region"
HTTP = "http_server_request_duration_seconds"
CLIENT = "edgeharness_client_request_duration_seconds"
SPANS = "traces_span_metrics_duration_milliseconds"  # a native histogram
BUDGET_REMAINING = "slo:error_budget_remaining:ratio"


# --- PromQL ---------------------------------------------------------------------------------------


def quantile(q: float, metric: str, selector: str, by: str, window: str = "$__rate_interval") -> str:
    """histogram_quantile over a rate of the metric's buckets, keeping the `by` labels."""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{selector}}}[{window}])))"


def native_quantile(q: float, metric: str, selector: str, by: str, window: str = "$__rate_interval") -> str:
    """histogram_quantile over a native histogram (one series per histogram, no le label)."""
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}{{{selector}}}[{window}])))"


def lifetime_quantile(q: float, metric: str, selector: str, by: str) -> str:
    """Quantile over every observation since each instance started (seen in the range).

    Rare events (a process cold start is recorded once, before the first export) never show in rate():
    the first sample already holds them. The cumulative buckets do.
    """
    return f"histogram_quantile({q}, sum by (le, {by}) (max_over_time({metric}_bucket{{{selector}}}[$__range])))"


def per_second(metric: str, selector: str, by: str) -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def or_zero(expr: str, by: str = SERVER_BY) -> str:
    """The expression, or 0 for every region that serves requests (a counter never incremented has no series)."""
    return f"({expr}) or (sum by ({by}) (rate({HTTP}_count{{{REGION}}}[$__rate_interval])) * 0)"


def region_coordinates(path: Path = REGIONS_FILE) -> str:
    """A constant vector with one series per region of the catalogue, labelled cloud_region, lat and lon."""
    regions: dict[str, Any] = (yaml.safe_load(path.read_text(encoding="utf-8")) or {})["regions"]
    series = [
        f'label_replace(label_replace(label_replace(vector(1), "cloud_region", "{name}", "", ""), '
        f'"lat", "{float(r["lat"])}", "", ""), "lon", "{float(r["lon"])}", "", "")'
        for name, r in regions.items()
    ]
    return "\n  or ".join(series)


# --- panel helpers ---------------------------------------------------------------------------------


def query(expr: str, legend: str, ref: str = "A", *, exemplar: bool = False, instant: bool = False) -> Any:
    q = prometheus.Dataquery().datasource(PROMETHEUS).expr(expr).legend_format(legend).ref_id(ref)
    if exemplar:
        q = q.exemplar(True)
    return q.instant() if instant else q.range()


def steps(*pairs: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=v, color=c) for v, c in pairs])
    )


def legend_table(*calcs: str) -> common.VizLegendOptions:
    return (
        common.VizLegendOptions()
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(list(calcs))
    )


def tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING)


def timeseries(title: str, question: str, unit: str, w: int = 12, h: int = 8) -> ts.Panel:
    return (
        ts.Panel()
        .title(title)
        .description(question)
        .datasource(PROMETHEUS)
        .unit(unit)
        .span(w)
        .height(h)
        .line_width(1)
        .fill_opacity(10)
        .legend(legend_table("mean", "max", "lastNotNull"))
        .tooltip(tooltip())
    )


def latency(
    title: str, question: str, metric: str, selector: str, by: str, label: str, unit: str = "s", native: bool = False
) -> ts.Panel:
    """p50/p95/p99 lines with exemplars (trace ids, linked to Tempo) and the p50 SLO as a dashed line."""
    slo = P50_SLO_S * (1000 if unit == "ms" else 1)
    panel = (
        timeseries(title, question, unit)
        .thresholds(steps((None, "green"), (slo, "red")))
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED))
        .min(0)
    )
    for ref, q in (("A", 0.5), ("B", 0.95), ("C", 0.99)):
        expr = (native_quantile if native else quantile)(q, metric, selector, by)
        # Prometheus keeps no exemplars of native histograms that arrive by remote write.
        panel = panel.with_target(query(expr, f"{label} p{round(q * 100)}", ref, exemplar=ref == "A" and not native))
    return panel


def slo_stat(title: str, question: str, expr: str, unit: str, thresholds: dash.ThresholdsConfig) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(question)
        .datasource(PROMETHEUS)
        .with_target(query(expr, "{{cloud_region}}", instant=True))
        .unit(unit)
        .thresholds(thresholds)
        .color_mode(BigValueColorMode.BACKGROUND)
        .graph_mode(BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.VALUE_AND_NAME)
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .no_value("no data")
        .span(4)
        .height(9)
    )


def bars(title: str, question: str, unit: str, w: int = 8, h: int = 8) -> bargauge.Panel:
    return (
        bargauge.Panel()
        .title(title)
        .description(question)
        .datasource(PROMETHEUS)
        .unit(unit)
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .min(0)
        .span(w)
        .height(h)
    )


# --- rows ------------------------------------------------------------------------------------------


def slo_row() -> list[cogbuilder.Builder[Any]]:
    warm = f'{REGION}, faas_coldstart="false"'
    cold = f'{REGION}, faas_coldstart="true"'
    errors = f'sum by (cloud_region) (rate({HTTP}_count{{{REGION}, http_response_status_code=~"5.."}}[$__range]))'
    total = f"sum by (cloud_region) (rate({HTTP}_count{{{REGION}}}[$__range]))"
    p50_map = (
        f"{quantile(0.5, HTTP, warm, SERVER_BY, '$__range')}\n"
        f"* on (cloud_region) group_left (lat, lon) (\n  {region_coordinates()}\n)"
    )
    return [
        slo_stat(
            "Warm p50 latency (SLO < 10 ms)",
            "Does each region hold the headline SLO? Server-side p50 of warm requests over the time range.",
            quantile(0.5, HTTP, warm, SERVER_BY, "$__range"),
            "s",
            steps((None, "green"), (P50_SLO_S * 0.8, "orange"), (P50_SLO_S, "red")),
        ),
        slo_stat(
            "Cold-start p95 (SLO < 200 ms)",
            "How slow are requests that met a cold PoP? p95 of cold requests since each instance started.",
            lifetime_quantile(0.95, HTTP, cold, SERVER_BY),
            "s",
            steps((None, "green"), (COLD_START_P95_SLO_S * 0.8, "orange"), (COLD_START_P95_SLO_S, "red")),
        ),
        slo_stat(
            "Error rate (SLO < 1 %)",
            "What fraction of requests fail with a 5xx (shed requests included) over the time range?",
            f"({errors} or {total} * 0) / {total}",
            "percentunit",
            steps((None, "green"), (ERROR_RATE_SLO / 2, "orange"), (ERROR_RATE_SLO, "red")),
        ),
        geomap.Panel()
        .title("PoPs by warm p50 latency")
        .description(
            "Where in the world is latency good or bad? Each PoP at its region's coordinates "
            "(harness/data/regions.yaml), coloured by warm p50 against the 10 ms SLO."
        )
        .datasource(PROMETHEUS)
        .with_target(query(p50_map, "{{cloud_region}}", instant=True).format(prometheus_models.PromQueryFormat.TABLE))
        # Label values are strings; the markers layer needs numeric coordinates.
        .with_transformation(
            models.DataTransformerConfig(
                id_val="convertFieldType",
                options={
                    "conversions": [
                        {"targetField": "lat", "destinationType": "number"},
                        {"targetField": "lon", "destinationType": "number"},
                    ],
                    "fields": {},
                },
            )
        )
        .unit("s")
        .decimals(2)
        .thresholds(steps((None, "green"), (P50_SLO_S * 0.8, "orange"), (P50_SLO_S, "red")))
        .color_scheme(dash.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
        .view(geomap.MapViewConfig().id("zero").lat(15).lon(10).zoom(1))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False).show_attribution(True))
        .basemap(common.MapLayerOptions().type("default").name("Basemap"))
        .layers(
            [
                common.MapLayerOptions()
                .type("markers")
                .name("PoPs")
                .location(
                    common.FrameGeometrySource().mode(FrameGeometrySourceMode.COORDS).latitude("lat").longitude("lon")
                )
                .tooltip(True)
                .config(
                    {
                        "showLegend": True,
                        "style": {
                            "color": {"field": "Value", "fixed": "dark-green"},
                            "opacity": 0.8,
                            "size": {"fixed": 12},
                            "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                            "text": {"field": "cloud_region", "fixed": "", "mode": "field"},
                            "textConfig": {"fontSize": 12, "offsetY": -16, "textAlign": "center"},
                        },
                    }
                )
            ]
        )
        .tooltip(geomap.TooltipOptions().mode(geomap_models.TooltipMode.DETAILS))
        .span(12)
        .height(9),
    ]


def burn_row() -> list[cogbuilder.Builder[Any]]:
    """From the recording rules of `edgeharness slo rules` (collector/rules/slo.yml)."""
    by = "cloud_region, slo"
    return [
        bars(
            "Error budget remaining by region and SLO",
            "How much of each objective's error budget is left over the SLO window (1 - objective, default "
            "30 days)? Below zero: the objective is already missed for the window.",
            "percentunit",
            w=8,
            h=8,
        )
        .with_target(query(f"min by ({by}) ({BUDGET_REMAINING}{{{REGION}}})", "{{cloud_region}} {{slo}}", instant=True))
        .min(-1)
        .max(1)
        .thresholds(steps((None, "red"), (0, "orange"), (0.25, "green"))),
        timeseries(
            "Error budget burn rate by region (1h and 5m)",
            "How fast is each region spending its error budget? 1 spends it in exactly the SLO window; the page "
            "alert fires while both the 1h and the 5m rate exceed 14.4.",
            "x",
            w=16,
        )
        .with_target(query(f"max by ({by}) (slo:burn_rate:rate1h{{{REGION}}})", "{{cloud_region}} {{slo}} 1h"))
        .with_target(query(f"max by ({by}) (slo:burn_rate:rate5m{{{REGION}}})", "{{cloud_region}} {{slo}} 5m", "B"))
        .min(0)
        .thresholds(steps((None, "green"), (1, "orange"), (14.4, "red")))
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)),
    ]


def latency_row() -> list[cogbuilder.Builder[Any]]:
    return [
        latency(
            "Server latency by region (warm)",
            "How fast does each PoP answer once warm? p50/p95/p99 of http.server.request.duration; "
            "exemplar dots open the request's trace in Tempo.",
            HTTP,
            f'{REGION}, faas_coldstart="false"',
            SERVER_BY,
            "{{cloud_region}}",
        ),
        latency(
            "Client latency by client region (warm)",
            "What do users in each client region see? p50/p95/p99 measured by the load generator from each "
            "request's intended send time (open model), network RTT excluded.",
            CLIENT,
            'edgeharness_client_region=~"$region", faas_coldstart="false"',
            "edgeharness_client_region",
            "{{edgeharness_client_region}}",
        ),
        latency(
            "Server span latency by region (span metrics)",
            "Does the trace pipeline agree with the handler's own histogram? p50/p95/p99 of server spans from "
            "the collectors' span_metrics connector, an exponential (Prometheus native) histogram: exact to a "
            "few percent at any latency, no bucket bounds to tune.",
            SPANS,
            f'{REGION}, span_kind="SPAN_KIND_SERVER"',
            SERVER_BY,
            "{{cloud_region}}",
            unit="ms",
            native=True,
        ),
        table.Panel()
        .title("Slowest recent requests (Tempo)")
        .description("Which requests broke 10 ms, and why? Server spans over 10 ms in Tempo; click a trace id.")
        .datasource(TEMPO)
        .with_target(
            tempo.TempoQuery()
            .datasource(TEMPO)
            .ref_id("A")
            .query_type("traceql")
            .query('{ resource.cloud.region =~ "${region:regex}" && kind = server && duration > 10ms }')
            .limit(20)
            .table_type(tempo_models.SearchTableType.TRACES)
        )
        .unit("ms")
        # Set explicitly so that the JSON is a fixed point of the SDK's model (decoding fills in defaults).
        .align(FieldTextAlignment.AUTO)
        .inspect(False)
        .span(12)
        .height(8),
    ]


def traffic_row() -> list[cogbuilder.Builder[Any]]:
    count = f"{HTTP}_count"
    return [
        timeseries("Requests per second by region", "How much traffic does each PoP serve?", "reqps", w=8)
        .with_target(query(per_second(count, REGION, SERVER_BY), "{{cloud_region}}"))
        .min(0),
        timeseries(
            "Shed and failed requests by region",
            "Is any PoP overloaded or failing? Requests shed with 503 (overload) and all 5xx and 4xx responses.",
            "reqps",
            w=8,
        )
        .with_target(
            query(or_zero(per_second("edgeharness_requests_shed_total", REGION, SERVER_BY)), "{{cloud_region}} shed")
        )
        .with_target(
            query(
                or_zero(per_second(count, f'{REGION}, http_response_status_code=~"5.."', SERVER_BY)),
                "{{cloud_region}} 5xx",
                "B",
            )
        )
        .with_target(
            query(
                or_zero(per_second(count, f'{REGION}, http_response_status_code=~"4.."', SERVER_BY)),
                "{{cloud_region}} 4xx",
                "C",
            )
        )
        .min(0),
        timeseries(
            "Load generator arrivals: sent, late, dropped",
            "Is the load generator keeping its open-model schedule? Late or dropped arrivals mean it fell behind "
            "(coordinated omission) and the run's latencies understate the truth.",
            "reqps",
            w=8,
        )
        .with_target(
            query(
                per_second(
                    "edgeharness_client_arrivals_total",
                    'edgeharness_client_region=~"$region"',
                    "edgeharness_client_region, outcome",
                ),
                "{{edgeharness_client_region}} {{outcome}}",
            )
        )
        .min(0),
    ]


def saturation_row() -> list[cogbuilder.Builder[Any]]:
    return [
        timeseries(
            "In-flight and queued requests by region",
            "How close is each PoP to its concurrency limit? Requests being processed and waiting for a slot.",
            "short",
        )
        .with_target(
            query(f"sum by (cloud_region) (http_server_active_requests{{{REGION}}})", "{{cloud_region}} in flight")
        )
        .with_target(
            query(f"sum by (cloud_region) (edgeharness_queued_requests{{{REGION}}})", "{{cloud_region}} queued", "B")
        )
        .min(0)
        .decimals(0),
        timeseries(
            "Queue wait p95 by region",
            "How long do requests wait for a free slot before processing starts?",
            "s",
        )
        .with_target(query(quantile(0.95, "edgeharness_queue_duration_seconds", REGION, SERVER_BY), "{{cloud_region}}"))
        .min(0),
    ]


def coldstart_row() -> list[cogbuilder.Builder[Any]]:
    by = "cloud_region, edgeharness_coldstart_kind"
    return [
        bars(
            "Cold starts by region and kind",
            "How often does each PoP start cold? Process starts and model (re)loads after scale to zero, "
            "counted since each instance started.",
            "short",
        )
        .with_target(
            query(
                f"sum by ({by}) (max_over_time(faas_coldstarts_total{{{REGION}}}[$__range]))",
                "{{cloud_region}} {{edgeharness_coldstart_kind}}",
                instant=True,
            )
        )
        .decimals(0)
        .thresholds(steps((None, "blue"))),
        bars(
            "Init duration p95 by region and kind",
            "How long does a cold start take, from process start (or model fetch) to ready?",
            "s",
        )
        .with_target(
            query(
                lifetime_quantile(0.95, "faas_init_duration_seconds", REGION, by),
                "{{cloud_region}} {{edgeharness_coldstart_kind}}",
                instant=True,
            )
        )
        .thresholds(steps((None, "green"), (COLD_START_P95_SLO_S * 0.8, "orange"), (COLD_START_P95_SLO_S, "red"))),
        bars(
            "Where init time goes: mean duration by phase",
            "Which initialization phase (imports, model fetch, session creation, warm-up, server start) "
            "dominates cold starts? A process's eager model load runs beside its imports, so those phases "
            "overlap rather than add up.",
            "s",
        )
        .with_target(
            query(
                "sum by (cloud_region, edgeharness_init_phase) "
                f"(max_over_time(edgeharness_init_phase_duration_seconds_sum{{{REGION}}}[$__range]))\n"
                "/ sum by (cloud_region, edgeharness_init_phase) "
                f"(max_over_time(edgeharness_init_phase_duration_seconds_count{{{REGION}}}[$__range]))",
                "{{cloud_region}} {{edgeharness_init_phase}}",
                instant=True,
            )
        )
        .thresholds(steps((None, "purple"))),
    ]


def model_row() -> list[cogbuilder.Builder[Any]]:
    model = f'{REGION}, edgeharness_model_name=~"$model"'
    by = "cloud_region, edgeharness_model_name"
    return [
        latency(
            "Inference time by region and model",
            "How long does ONNX Runtime take per image? p50/p95/p99 of the session run alone.",
            "edgeharness_inference_duration_seconds",
            model,
            by,
            "{{cloud_region}} {{edgeharness_model_name}}",
        ),
        timeseries(
            "Pipeline stage p50 by region",
            "Which stage of upload → decode → preprocess → inference → postprocess costs the most?",
            "s",
        )
        .with_target(
            query(
                quantile(0.5, "edgeharness_stage_duration_seconds", REGION, "cloud_region, edgeharness_stage"),
                "{{cloud_region}} {{edgeharness_stage}}",
            )
        )
        .min(0),
        statetimeline.Panel()
        .title("Model loaded by region")
        .description("Is the model in memory, or has the PoP scaled to zero (the next request pays a model load)?")
        .datasource(PROMETHEUS)
        # An OTel gauge of unit "1" gains a _ratio suffix on remote write.
        .with_target(query(f"max by (cloud_region) (edgeharness_model_loaded_ratio{{{REGION}}})", "{{cloud_region}}"))
        .unit("bool")
        .mappings(
            [
                models.ValueMap(
                    options={
                        "0": models.ValueMappingResult(text="unloaded", color="blue", index=0),
                        "1": models.ValueMappingResult(text="loaded", color="green", index=1),
                    }
                )
            ]
        )
        .thresholds(steps((None, "blue"), (1, "green")))
        .show_value(VisibilityMode.NEVER)
        .fill_opacity(70)
        .line_width(0)
        .span(24)
        .height(5),
    ]


def collector_row() -> list[cogbuilder.Builder[Any]]:
    # (metric, legend, grouping); losses are zero-filled so that "none lost" reads 0, not "no data".
    spans = [
        ("otelcol_receiver_accepted_spans_total", "{{cloud_region}} accepted", "cloud_region", False),
        ("otelcol_receiver_refused_spans_total", "{{cloud_region}} refused", "cloud_region", True),
        ("otelcol_exporter_sent_spans_total", "{{cloud_region}} sent {{exporter}}", "cloud_region, exporter", False),
        ("otelcol_exporter_send_failed_spans_total", "{{cloud_region}} failed", "cloud_region", True),
    ]
    points = [
        ("otelcol_receiver_accepted_metric_points_total", "{{cloud_region}} accepted", "cloud_region", False),
        ("otelcol_receiver_refused_metric_points_total", "{{cloud_region}} refused", "cloud_region", True),
        (
            "otelcol_exporter_sent_metric_points_total",
            "{{cloud_region}} sent {{exporter}}",
            "cloud_region, exporter",
            False,
        ),
        ("otelcol_exporter_send_failed_metric_points_total", "{{cloud_region}} failed", "cloud_region", True),
    ]

    def flow(title: str, question: str, metrics: list[tuple[str, str, str, bool]]) -> ts.Panel:
        panel = timeseries(title, question, "cps", w=8).min(0)
        for ref, (metric, legend, by, loss) in zip("ABCD", metrics, strict=True):
            expr = per_second(metric, REGION, by)
            panel = panel.with_target(query(or_zero(expr) if loss else expr, legend, ref))
        return panel

    return [
        flow(
            "Collector spans per second",
            "Does every span reach the collector and leave it for Tempo? Refused or failed means lost traces.",
            spans,
        ),
        flow(
            "Collector metric points per second",
            "Does every metric point reach the collector and leave it for Prometheus?",
            points,
        ),
        timeseries(
            "Collector exporter queue fill",
            "Is a collector falling behind its backend? Queue size as a fraction of capacity, per exporter.",
            "percentunit",
            w=8,
        )
        .with_target(
            query(
                "max by (cloud_region, exporter) "
                f"(otelcol_exporter_queue_size{{{REGION}}} / otelcol_exporter_queue_capacity{{{REGION}}})",
                "{{cloud_region}} {{exporter}}",
            )
        )
        .min(0)
        .max(1)
        .thresholds(steps((None, "green"), (0.8, "red")))
        .thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)),
        timeseries(
            "Telemetry dropped by handlers",
            "Do handlers lose spans or metric points before they reach the collector (export failed, queue full)?",
            "cps",
            w=24,
            h=6,
        )
        .with_target(
            query(
                or_zero(per_second("edgeharness_telemetry_dropped_total", REGION, "cloud_region, signal, reason")),
                "{{cloud_region}} {{signal}} {{reason}}",
            )
        )
        .min(0)
        .draw_style(GraphDrawStyle.BARS)
        .stacking(common.StackingConfig().mode(StackingMode.NORMAL)),
    ]


# --- the dashboard ---------------------------------------------------------------------------------


def variables() -> list[dash.QueryVariable]:
    def variable(name: str, label: str, expr: str) -> dash.QueryVariable:
        return (
            dash.QueryVariable(name)
            .label(label)
            .datasource(PROMETHEUS)
            .query(expr)
            .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(models.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(models.VariableOption(selected=True, text="All", value="$__all"))
        )

    return [
        variable("region", "Region", f"label_values({HTTP}_count, cloud_region)"),
        variable(
            "model",
            "Model",
            f"label_values(edgeharness_inference_duration_seconds_count{{{REGION}}}, edgeharness_model_name)",
        ),
    ]


ROWS = (
    ("SLO status", slo_row),
    ("Error budgets (SLO rules)", burn_row),
    ("Latency", latency_row),
    ("Traffic and errors", traffic_row),
    ("Saturation", saturation_row),
    ("Cold starts", coldstart_row),
    ("Model and inference", model_row),
    ("Collectors and telemetry health", collector_row),
)


def build() -> dash.Dashboard:
    """The dashboard builder; `.build()` gives the SDK model."""
    board = (
        dash.Dashboard(TITLE)
        .uid(UID)
        .description("Every region at a glance: SLOs, latency, traffic, cold starts, model, collectors.")
        .tags(["edgeharness", "edge", "inference", "generated"])
        .editable()
        .refresh("10s")
        .time("now-15m", "now")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .timepicker(dash.TimePicker().refresh_intervals(["5s", "10s", "30s", "1m", "5m"]))
    )
    for variable in variables():
        board = board.with_variable(variable)
    panel_id = 0
    for title, make in ROWS:
        panel_id += 1
        board = board.with_row(dash.Row(title).id(panel_id))
        for panel in make():
            panel_id += 1
            board = board.with_panel(panel.id(panel_id))
    return board
