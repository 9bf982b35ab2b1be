"""The ``helios`` command line. Heavy imports happen inside each command, after the input is validated."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from helios.errors import UsageError
from helios.redact import redact_uri

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Helios: a Prefect + ONNX Runtime + MLflow model pipeline.")
out = Console(soft_wrap=True)
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)  # "[cat,dog]" is not markup
    raise typer.Exit(code)


@app.command()
def run(
    config: Optional[Path] = typer.Option(None, "--config", help="YAML, TOML or JSON config file."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting: dotted.key=value (repeatable)."),
    input: Optional[str] = typer.Option(None, "--input", help="Input directory, fsspec URL, or table (.parquet, .csv, "
                                        ".jsonl with --set infer.column=NAME) (default: generated demo corpus)."),
    model: Optional[str] = typer.Option(None, "--model", help="mnist-cnn, minilm, a .onnx file, a HF dir, module:factory, "
                                        "models:/NAME@ALIAS or models:/NAME/VERSION."),
    out_dir: Optional[str] = typer.Option(None, "--out", help="Run directory (rerun with the same one to resume)."),
    labels: Optional[str] = typer.Option(None, "--labels", help="CSV with path,label to report accuracy per stage."),
    full: bool = typer.Option(False, "--full", help="Reprocess every file instead of reusing earlier results."),
    runner: Optional[str] = typer.Option(None, "--runner", help="local | ray | dask"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address"),
    dask_address: Optional[str] = typer.Option(None, "--dask-address"),
    metrics_port: Optional[int] = typer.Option(None, "--metrics-port", help="Serve Prometheus metrics on 127.0.0.1."),
    pushgateway: Optional[str] = typer.Option(None, "--pushgateway", help="Push metrics here at the end."),
) -> None:
    """Run the whole pipeline (with no options: the built-in demo, embedded servers, under a minute)."""
    from helios.cli.config_file import load_config
    from helios.cli.run import preflight, run_pipeline

    flags = {"input": input, "model.name": model, "out": out_dir, "labels": labels, "infer.full": full or None,
             "infer.runner": runner, "infer.runner_address": ray_address or dask_address,
             "infer.metrics_port": metrics_port, "infer.pushgateway": pushgateway, "infer.progress": True}
    from helios.cli.warm import ServerWarmup

    warmup = ServerWarmup()  # Prefect's temporary server starts while the model loads
    try:
        cfg = load_config(config, set_, flags)
        preflight(cfg, warmup.start)
    except UsageError as exc:
        fail(str(exc))
    run_pipeline(cfg, out, fail, warmup.wait)


@app.command()
def hardware(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
             input: Optional[str] = typer.Option(None, "--input", help="Measure read bandwidth of this filesystem.")) -> None:
    """Show the detected hardware profile and the recommended settings."""
    from hardware import detect, format_table, recommend

    profile = detect(input)
    rec = recommend(profile)
    if as_json:
        sys.stdout.write(json.dumps({"profile": profile.to_dict(), "recommendation": rec.to_dict()}, indent=2) + "\n")
    else:
        out.print(format_table(profile, rec))


@app.command("demo-data")
def demo_data(kind: str = typer.Option("mnist", "--kind", help="mnist | text"),
              n: int = typer.Option(2000, "--n", help="Number of files."),
              corrupt: str = typer.Option("", "--corrupt", help="Comma-separated corruption names (mnist)."),
              out_dir: Path = typer.Option(..., "--out", help="Directory to write files/ and labels.csv into."),
              seed: int = typer.Option(0, "--seed")) -> None:
    """Write a demo corpus: OUT/files/... and OUT/labels.csv (path,label,corruption)."""
    from helios.data.demo import write_demo

    names = tuple(c.strip() for c in corrupt.split(",") if c.strip())
    try:
        labels = write_demo(kind, n, out_dir, names, seed)
    except UsageError as exc:
        fail(str(exc))
    out.print(f"wrote {n} {kind} files to {out_dir / 'files'} and {labels}")
    out.print(f"run: helios run --input {out_dir / 'files'} --labels {labels} --model {'minilm' if kind == 'text' else 'mnist-cnn'}")


@app.command()
def optimize(
    model: Optional[str] = typer.Option(None, "--model", help="mnist-cnn, minilm, a .onnx file, a HF dir, module:factory (default: the config's, else mnist-cnn)."),
    sample: Optional[Path] = typer.Option(None, "--sample", help="Directory of your own files to evaluate and calibrate on (default: the demo corpus)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="CSV with path,label for the sample files: adds accuracy per variant."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML, TOML or JSON config file (model, prepare, optimize, tracking sections)."),
    set_: list[str] = typer.Option([], "--set", help="Override a setting, e.g. optimize.calibration=entropy (repeatable)."),
    out_dir: Path = typer.Option(..., "--out", help="Directory for the variants and optimize.json."),
) -> None:
    """Export, build the optimized variants, evaluate them and pick one; writes OUT/optimize.json and tracks it in MLflow."""
    from helios.cli.config_file import load_config
    from helios.cli.run import user_errors

    if sample is not None and not sample.is_dir():
        fail(f"sample directory {sample} does not exist: pass a directory of input files to --sample")
    if labels is not None and sample is None:
        fail("--labels needs --sample: the labels name files of your sample (the demo sample brings its own)")
    if out_dir.exists() and not out_dir.is_dir():
        fail(f"--out {out_dir} is a file: pass a directory for the variants")
    try:
        cfg = load_config(config, set_, {"model.name": model, "labels": str(labels) if labels else None})
        from flows.optimize import optimize_command

        result, champion = optimize_command(cfg, sample, out_dir)
    except UsageError as exc:
        fail(str(exc))
    except user_errors() as exc:  # a failed parity gate, a provider fallback with on_provider_fallback=fail
        fail(str(exc), 1)
    out.print(f"selected [bold]{result.selected.name}[/] ({result.selected.reason}); table in {result.table_path}")
    if champion:
        promoted = "promoted to champion" if champion["promoted"] else "not promoted"
        out.print(f"MLflow: run {champion['run_id']} in {redact_uri(champion['tracking_uri'])}; registered "
                  f"{champion['registered_model']} version {champion['version']}, {promoted} "
                  f"({champion['comparison']['why']})")


@app.command()
def compare(experiment: str = typer.Option("helios", "--experiment"), last: int = typer.Option(10, "--last"),
            tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri",
                                                       help="Default: the embedded store of helios-work/.")) -> None:
    """Compare recent runs from MLflow: model, variant, hardware class, throughput, accuracy, LLM cost."""
    from flows.tracking import default_tracking_uri
    from helios.cli.compare import compare_runs, render_comparison

    uri = tracking_uri or default_tracking_uri(Path("helios-work"))
    try:
        out.print(render_comparison(compare_runs(uri, experiment, last)))
    except UsageError as exc:
        fail(str(exc))


@app.command()
def serve(model: str = typer.Option("mnist-cnn", "--model", help="models:/NAME@ALIAS, or a registered name (its champion)."),
          port: int = typer.Option(5000, "--port"), host: str = typer.Option("127.0.0.1", "--host"),
          workers: Optional[int] = typer.Option(None, "--workers", min=1,
                                                help="uvicorn worker processes, each loading the model (default: "
                                                     "the usable cores, at most 4)."),
          tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri",
                                                     help="Default: the embedded store of helios-work/.")) -> None:
    """Serve a registered model over HTTP with `mlflow models serve` (the champion; files and texts in, labels out)."""
    import os

    from flows.tracking import default_tracking_uri
    from helios.cli.serve import default_workers, serve_command

    try:
        command, env = serve_command(model, port, host, workers or default_workers(),
                                     tracking_uri or default_tracking_uri(Path("helios-work")))
    except UsageError as exc:
        fail(str(exc))
    err.print(f"exec: MLFLOW_TRACKING_URI={env['MLFLOW_TRACKING_URI']} {' '.join(command)}", highlight=False)
    os.execvpe(command[0], command, env)  # the server replaces this process: signals and exit codes are mlflow's


from helios.cli.ops import ops_app  # noqa: E402  (the ops sub-commands; light imports only)
app.add_typer(ops_app, name="ops")

if __name__ == "__main__":
    app()
